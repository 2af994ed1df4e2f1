-- 0008: "this happened already" keys, so an action that two events (or two
-- processes) may both see happens once: a reroll by the same member of the
-- same image, by button and by 🔄 within a few seconds, starts one job.
-- `at` is when the key was last taken; a key older than its caller's window
-- may be taken again, and keys a day old are deleted as new ones arrive.
CREATE TABLE once_keys (
    key TEXT PRIMARY KEY,
    at  TEXT NOT NULL
);
CREATE INDEX once_keys_at ON once_keys (at);
