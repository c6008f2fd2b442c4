"""The routing engine: plain dataclasses in, decisions out. No Django, no ORM, no I/O."""
