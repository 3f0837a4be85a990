"""The ground's station console: the queue, uploads, each edge's link."""
