from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from targetgroups.documents import DocumentError, flatten_errors
from targetgroups.services import target_group_import


class Command(BaseCommand):
    help = (
        "Create or replace a target group from a target-group JSON file. A bad file changes "
        "nothing."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", help="Path to the JSON file, or - for standard input.")

    def handle(self, *args: Any, file: str, **options: Any) -> None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"{file} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        try:
            group, created = target_group_import(data=data)
        except ValidationError as exc:
            lines = flatten_errors(
                exc.detail
                if isinstance(exc, DocumentError)
                else (exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
            )
            raise CommandError(
                "invalid target group, nothing changed:\n  " + "\n  ".join(lines)
            ) from None
        verb = "Created" if created else "Replaced"
        self.stdout.write(f"{verb} target group {group.name} with {group.members.count()} members.")
