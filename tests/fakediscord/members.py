"""Members as test actors: they run commands, click buttons, submit modals, react, and post.

What a member's client would refuse (an unsynced command, a disabled button, a
missing required option, a channel they can't see) raises AssertionError here, so a
test can't accidentally exercise a path no real member could reach.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .commands import MESSAGE_COMMAND
from .interactions import FakeInteraction
from .messages import FakeMessage, MessageVersion, compute_pings
from .options import build_options
from .payloads import message_payload
from .permissions import Perm

if TYPE_CHECKING:
    from .fake import FakeDiscord
    from .state import FakeChannel, FakeGuild, FakeRole, FakeUser

APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5


class FakeMember:
    def __init__(self, fake: FakeDiscord, guild: FakeGuild, user: FakeUser, roles: list[FakeRole]) -> None:
        self._fake = fake
        self.guild = guild
        self.user = user
        self.roles = roles
        self.nick: str | None = None
        self.joined_at = fake.clock.wall()

    def __repr__(self) -> str:
        return f"<FakeMember {self.name} id={self.id}>"

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def name(self) -> str:
        return self.user.username

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    @property
    def dms_open(self) -> bool:
        return self.user.dms_open

    @dms_open.setter
    def dms_open(self, value: bool) -> None:
        self.user.dms_open = value

    def permissions_in(self, channel: FakeChannel) -> int:
        return channel.permissions_for(self)

    def _require(self, channel: FakeChannel, needed: Perm, doing: str) -> None:
        perms = self.permissions_in(channel)
        if channel.deleted or not perms & Perm.VIEW_CHANNEL or not perms & needed:
            raise AssertionError(f"{self.name} cannot {doing} in #{channel.name} (permissions {perms:#x})")

    async def run_command(self, name: str, channel: FakeChannel, **options: Any) -> FakeInteraction:
        """Invoke `/name` (or `"group sub"`) with options typed from the synced schema (guessed if never synced)."""
        fake = self._fake
        self._require(channel, Perm.USE_APPLICATION_COMMANDS, f"use /{name}")
        top, *path = name.split()
        command = fake.commands.find(top, self.guild.id)
        if command is None and fake.commands.synced:
            known = sorted({c["name"] for scope in fake.commands.scopes.values() for c in scope})
            raise AssertionError(f"/{top} is not a synced command here (synced: {known})")
        if command is not None and command.get("default_member_permissions") is not None:
            required = int(command["default_member_permissions"])
            if self.guild.permissions_for(self) & required != required:
                raise AssertionError(f"{self.name} lacks the permissions /{top} requires")
        data: dict[str, Any] = {"id": str(command["id"]) if command else str(fake.ids.next()), "name": top, "type": 1}
        opts, resolved = build_options(fake, self.guild, command, path, options)
        if opts:
            data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        if command is not None and "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        interaction = FakeInteraction(
            fake, interaction_type=APPLICATION_COMMAND, member=self, channel=channel, data=data, command_name=name
        )
        return await fake.dispatch_interaction(interaction)

    async def autocomplete(
        self, name: str, channel: FakeChannel, focused: str, typed: str, **options: Any
    ) -> list[Any]:
        """What the bot suggests for option `focused` while `typed` is in it and `options` are filled in already."""
        fake = self._fake
        command = fake.commands.find(name, self.guild.id)
        if command is None:
            raise AssertionError(f"/{name} is not a synced command here")
        spec = next((option for option in command.get("options") or [] if option["name"] == focused), None)
        if spec is None or not spec.get("autocomplete"):
            raise AssertionError(f"option {focused!r} of /{name} has no autocomplete")
        opts, resolved = build_options(fake, self.guild, None, [], options)
        opts.append({"name": focused, "type": spec["type"], "value": typed, "focused": True})
        data: dict[str, Any] = {"id": str(command["id"]), "name": name, "type": 1, "options": opts}
        if resolved:
            data["resolved"] = resolved
        interaction = FakeInteraction(
            fake, interaction_type=AUTOCOMPLETE, member=self, channel=channel, data=data, command_name=name
        )
        await fake.dispatch_interaction(interaction)
        await interaction.wait_until_acked()
        return [choice["value"] for choice in interaction.choices or []]

    async def run_message_command(self, name: str, message: FakeMessage) -> FakeInteraction:
        """Pick Apps → `name` on a message: an APPLICATION_COMMAND of type 3 whose `resolved.messages` holds the
        message in full (the interaction grants what the MESSAGE_CONTENT intent would otherwise hide)."""
        fake = self._fake
        channel = message.channel
        self._require(channel, Perm.USE_APPLICATION_COMMANDS, f"use Apps → {name}")
        command = fake.commands.find(name, self.guild.id, MESSAGE_COMMAND)
        if command is None:
            raise AssertionError(f"no message command {name!r} is synced here")
        data: dict[str, Any] = {
            "id": str(command["id"]),
            "name": name,
            "type": MESSAGE_COMMAND,
            "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): message_payload(message, viewer_id=fake.bot_user.id)}},
        }
        interaction = FakeInteraction(
            fake, interaction_type=APPLICATION_COMMAND, member=self, channel=channel, data=data, command_name=name
        )
        return await fake.dispatch_interaction(interaction)

    def _component(self, message: FakeMessage, custom_id: str) -> dict[str, Any]:
        if message.deleted:
            raise AssertionError(f"{message!r} was deleted")
        owner = message.interaction.member if message.interaction else None
        if message.ephemeral and owner is not self:
            raise AssertionError(f"{self.name} can't see an ephemeral message meant for {owner}")
        component = message.component(custom_id)
        if component is None:
            ids = [c.get("custom_id") for c in message.items()]
            raise AssertionError(f"no component {custom_id!r} on {message!r}; it has {ids}")
        if component.get("disabled"):
            raise AssertionError(f"{custom_id!r} is disabled")
        return component

    async def click(self, message: FakeMessage, custom_id: str) -> FakeInteraction:
        """Click a button: MESSAGE_COMPONENT with the message in the payload."""
        component = self._component(message, custom_id)
        if component.get("type") != 2 or component.get("style") in (5, 6):
            raise AssertionError(f"{custom_id!r} is not a clickable interaction button")
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._component_interaction(message, data)

    async def select(self, message: FakeMessage, custom_id: str, values: list[str]) -> FakeInteraction:
        component = self._component(message, custom_id)
        if component.get("type") == 3:
            offered = {o.get("value") for o in component.get("options") or []}
            if not set(values) <= offered:
                raise AssertionError(f"{values} not among the options {sorted(map(str, offered))}")
        data = {"custom_id": custom_id, "component_type": component.get("type"), "values": values}
        return await self._component_interaction(message, data)

    async def _component_interaction(self, message: FakeMessage, data: dict[str, Any]) -> FakeInteraction:
        interaction = FakeInteraction(
            self._fake,
            interaction_type=MESSAGE_COMPONENT,
            member=self,
            channel=message.channel,
            data=data,
            source_message=message,
        )
        return await self._fake.dispatch_interaction(interaction)

    async def submit_modal(self, opened_by: FakeInteraction | str, values: dict[str, str]) -> FakeInteraction:
        """Submit the modal a type 9 response opened (pass that interaction, or the modal's custom_id)."""
        origin = self._modal_origin(opened_by)
        modal = origin.modal or {}
        unknown = set(values)
        components: list[dict[str, Any]] = []
        for top in modal.get("components") or []:
            if top.get("type") == 18:
                field = self._modal_value(top["component"], values, unknown)
                components.append({"type": 18, "component": field})
            else:
                row = [self._modal_value(item, values, unknown) for item in top.get("components") or []]
                components.append({"type": 1, "components": row})
        if unknown:
            raise AssertionError(f"the modal has no fields {sorted(unknown)}")
        interaction = FakeInteraction(
            self._fake,
            interaction_type=MODAL_SUBMIT,
            member=self,
            channel=origin.channel,
            data={"custom_id": modal.get("custom_id"), "components": components},
            source_message=origin.source_message,
        )
        return await self._fake.dispatch_interaction(interaction)

    def _modal_origin(self, opened_by: FakeInteraction | str) -> FakeInteraction:
        if isinstance(opened_by, FakeInteraction):
            if opened_by.modal is None:
                raise AssertionError(f"{opened_by!r} did not open a modal")
            if opened_by.member is not self:
                raise AssertionError(f"that modal was shown to {opened_by.member.name}, not {self.name}")
            return opened_by
        for interaction in reversed(list(self._fake.interactions.by_id.values())):
            modal = interaction.modal
            if interaction.member is self and modal is not None and modal.get("custom_id") == opened_by:
                return interaction
        raise AssertionError(f"no modal {opened_by!r} was opened for {self.name}")

    @staticmethod
    def _modal_value(item: dict[str, Any], values: dict[str, str], unknown: set[str]) -> dict[str, Any]:
        custom_id = item.get("custom_id", "")
        unknown.discard(custom_id)
        value = values.get(custom_id, item.get("value") or "")
        if item.get("required", True) and not value:
            raise AssertionError(f"modal field {custom_id!r} is required")
        if value and not item.get("min_length", 0) <= len(value) <= item.get("max_length", 4000):
            raise AssertionError(f"modal field {custom_id!r}: length {len(value)} outside its limits")
        return {"type": item.get("type", 4), "custom_id": custom_id, "value": value}

    async def react(self, message: FakeMessage, emoji: str) -> None:
        needed = Perm.READ_MESSAGE_HISTORY if message.reactions.get(emoji) else Perm.ADD_REACTIONS
        self._require(message.channel, needed, f"react {emoji}")
        await self._fake.set_reaction(message, emoji, self.id, add=True)

    async def unreact(self, message: FakeMessage, emoji: str) -> None:
        await self._fake.set_reaction(message, emoji, self.id, add=False)

    async def send(self, channel: FakeChannel, content: str, *, dispatch: bool = True) -> FakeMessage:
        """Post as this member (MESSAGE_CREATE); `dispatch=False` stores it as if sent before the bot connected."""
        self._require(channel, Perm.SEND_MESSAGES, "send messages")
        perms = self.permissions_in(channel)
        pings = compute_pings(
            content,
            None,
            default_parse=("users", "roles", "everyone"),
            author_perms=perms,
            member_ids=set(self.guild.members),
            roles={r.id: r.mentionable for r in self.guild.roles.values() if not r.is_everyone},
            reply_author=None,
            author_id=self.id,
        )
        message = self._fake.store_message(channel, self.user, MessageVersion(content=content, pings=pings))
        if dispatch:
            await self._fake.dispatch_message(message, "MESSAGE_CREATE")
        return message
