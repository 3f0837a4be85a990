"""The whole-system bench (``relay bench``): both sides of the relay and the test extras, together."""
