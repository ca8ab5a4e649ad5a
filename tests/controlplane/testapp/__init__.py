"""A Django app installed by the test settings only: what the suite needs from Django that the
product does not (see ``management/commands/flush.py``)."""
