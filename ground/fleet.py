"""Who a bundle goes to: edge names, ``@group``s and ``all``, as ``--to``,
the console's To list and the spool's folders name them.

A ground serves a fleet: ``[edges.<name>]`` are its ships, ``[groups]``
names sets of them (a member is an edge or another ``@group``). One
recording sent to a group is encoded once and sent to each of its edges as
its own signed transfer (:mod:`ground.queue`). Everything here is checked
before anything is queued: an unknown name, an empty group, a name given
twice or a group that names itself is one line (:class:`UsageError`, exit 2)
and nothing is queued. The daemon checks every group at start
(:func:`check_groups`) so a mistake in the file is found then, not when an
operator first sends to it.
"""

from __future__ import annotations

from relay.config import ConfigError, GroundConfig
from relay.errors import UsageError

ALL = "all"


def _known(cfg: GroundConfig) -> str:
    edges = ", ".join(sorted(cfg.edges)) or "none"
    groups = ", ".join(f"@{g}" for g in sorted(cfg.groups))
    return f"edges: {edges}" + (f"; groups: {groups}" if groups else "")


def members(cfg: GroundConfig, group: str, flag: str = "--to", seen: tuple[str, ...] = ()) -> list[str]:
    """The edges of ``group``, its subgroups' included, in the order the file names them."""
    if group not in cfg.groups:
        raise UsageError(f"{flag} @{group}: no such group ({_known(cfg)})")
    if group in seen:
        path = " -> ".join(f"@{g}" for g in (*seen, group))
        raise UsageError(f"{flag} @{seen[0]}: group @{group} names itself ({path}); fix [groups] in the configuration")
    out: list[str] = []
    for member in cfg.groups[group]:
        if member.startswith("@"):
            found = members(cfg, member[1:], flag, (*seen, group))
        elif member in cfg.edges:
            found = [member]
        else:
            raise UsageError(f"{flag} @{group}: its member {member!r} is not an edge this ground serves "
                             f"({_known(cfg)})")
        out += [e for e in found if e not in out]
    return out


def recipients(cfg: GroundConfig, to: str | None, flag: str = "--to") -> list[str]:
    """The edges ``to`` names (``ship1,ship2``, ``@group``, ``all``, or a mix),
    each once, in the order given; none named means ``default_edge``."""
    text = (to or "").strip()
    if not text:
        if not cfg.ground.default_edge:
            raise UsageError(f"{flag}: no edge named, and no default_edge in the configuration")
        text = cfg.ground.default_edge
    names = [n.strip() for n in text.split(",")]
    if any(not n for n in names):
        raise UsageError(f"{flag} {text}: an empty name in the list")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"{flag} {text}: {', '.join(repeated)} named more than once")
    out: list[str] = []
    for name in names:
        if name == ALL:
            if not cfg.edges:
                raise UsageError(f"{flag} all: this ground serves no edges")
            found = sorted(cfg.edges)
        elif name.startswith("@"):
            found = members(cfg, name[1:], flag)
            if not found:
                raise UsageError(f"{flag} {name}: the group has no edges")
        elif name in cfg.edges:
            found = [name]
        else:
            hint = f" (did you mean @{name}?)" if name in cfg.groups else ""
            raise UsageError(f"{flag} {name}: not an edge this ground serves{hint} ({_known(cfg)})")
        out += [e for e in found if e not in out]  # a ship in two groups named hears it once
    return out


def check_groups(cfg: GroundConfig) -> list[str]:
    """Every group resolved, as the daemon does at start: a member that is no
    edge or a group that names itself is a :class:`ConfigError`; an empty
    group is returned, for a warning (sending to it is refused)."""
    if ALL in cfg.edges or ALL in cfg.groups:
        raise ConfigError(f"{'edges' if ALL in cfg.edges else 'groups'}.all: 'all' means every edge; "
                          "name it otherwise")
    empty = []
    for group in cfg.groups:
        try:
            if not members(cfg, group, f"groups.{group}"):
                empty.append(group)
        except UsageError as e:
            raise ConfigError(str(e).replace(f"groups.{group} @{group}: ", f"groups.{group}: ")) from None
    return empty
