-- 0010: an edit's input image is stored once, however many jobs start from it.
--
-- Rerolls and remixes of an edit send the same picture again; each used to
-- keep its own copy of the bytes (several MB each). Now a job names its image
-- (`input_image_id`), and every job made from it names the same row. The
-- foreign key keeps a named image from being deleted; retention deletes an
-- image once no job names it any more (storage/retention.py). AUTOINCREMENT:
-- an id is never handed out twice, so an id read from a job can only ever
-- name that job's picture, or nothing.
CREATE TABLE input_images (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at   TEXT    NOT NULL,  -- the first job's created_at: retention compares them
    content_type TEXT    NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    data         BLOB    NOT NULL
);

ALTER TABLE jobs ADD COLUMN input_image_id INTEGER REFERENCES input_images (id);

INSERT INTO input_images (id, created_at, content_type, width, height, data)
SELECT job_inputs.job_id, jobs.created_at, job_inputs.content_type, job_inputs.width, job_inputs.height, job_inputs.data
FROM job_inputs JOIN jobs ON jobs.id = job_inputs.job_id;
UPDATE jobs SET input_image_id = id WHERE id IN (SELECT job_id FROM job_inputs);
DROP TABLE job_inputs;

-- Whether any job still names an image (retention asks for every old image).
CREATE INDEX jobs_input_image ON jobs (input_image_id) WHERE input_image_id IS NOT NULL;
