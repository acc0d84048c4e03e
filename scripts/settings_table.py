"""Print the live worker's settings as the table of docs/live-worker.md (``python -m scripts.settings_table``)."""

from __future__ import annotations

from worker.config import RunSettings, env_name, flag_name, shown_default


def table() -> list[str]:
    lines = ["| variable | flag | default | what it sets |", "| --- | --- | --- | --- |"]
    for field, info in RunSettings.model_fields.items():
        default = shown_default(info.default)
        lines.append(f"| `{env_name(field)}` | `{flag_name(field)}` | `{default}` | {info.description} |")
    return lines


if __name__ == "__main__":
    print("\n".join(table()))
