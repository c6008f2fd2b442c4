"""Signals the capacity layer publishes for the layers above it.

`configuration_changed` is sent after a configuration write that Django's model
signals do not see (bulk_create sends no post_save). The gateway listens and
bumps the config version once the transaction commits; targetgroups never
imports the gateway.
"""

from __future__ import annotations

from django.dispatch import Signal

configuration_changed = Signal()
