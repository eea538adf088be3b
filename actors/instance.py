"""This process's instance ID: which instance answered, whose consumer claimed a job."""

from __future__ import annotations

import os
import secrets
import socket


def new_instance_id() -> str:
    """An ID for this process: host, pid and a random suffix (a reused pid differs)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
