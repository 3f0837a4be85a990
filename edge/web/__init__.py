"""The station console: web pages served by the daemons."""
