"""Settings the tests share."""

from __future__ import annotations

from relay.config import EdgeLink

# An edge store whose clock is the ground's (one machine): it takes a transfer signed the moment it began.
# A real store refuses what was signed before it began and max_clock_skew after (edge.store), and the
# ground signs such a transfer again; tests that open a store and send to it at once would only measure that.
SAME_CLOCK = EdgeLink(max_clock_skew=0)
