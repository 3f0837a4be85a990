"""The ground's station console (issue 15): the queue, uploads, each edge's link."""
