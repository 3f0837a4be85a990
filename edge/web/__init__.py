"""The station console (issue 15): web pages served by the daemons."""
