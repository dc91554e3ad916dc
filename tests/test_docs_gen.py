"""The generated settings reference (.env.example, docs/configuration.md) matches Settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskinfa_worker import docs_gen
from taskinfa_worker.settings import Settings, env_var, flag_name, has_flag, is_secret

ROOT = Path(__file__).resolve().parent.parent
FIX = "run `python -m taskinfa_worker.docs_gen` at the repository root and commit the result"


@pytest.mark.parametrize("relative", sorted(docs_gen.OUTPUTS))
def test_committed_file_equals_the_generated_one(relative: str) -> None:
    path = ROOT / relative
    assert path.is_file(), f"{relative} is missing: {FIX}"
    assert path.read_text(encoding="utf-8") == docs_gen.OUTPUTS[relative](), (
        f"{relative} is out of date with taskinfa_worker/settings.py: {FIX}"
    )


def test_env_example_lists_every_setting_once_with_secrets_empty() -> None:
    text = docs_gen.env_example()
    assignments = re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$", text, re.MULTILINE)
    names = [name for name, _ in assignments]
    assert sorted(names) == sorted(env_var(field) for field in Settings.model_fields)
    values = dict(assignments)
    for field in Settings.model_fields:
        if is_secret(field):
            assert values[env_var(field)] == "", field
    # Only required settings are active lines; everything else shows its default commented.
    active = re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)
    assert sorted(active) == sorted(
        env_var(field) for field in Settings.model_fields if docs_gen.is_required(field)
    )


def test_env_example_groups_follow_settings_metadata() -> None:
    text = docs_gen.env_example()
    headers = re.findall(r"^# === (\w+) =+$", text, re.MULTILINE)
    assert headers == list(docs_gen.groups())
    sections = re.split(r"^# === \w+ =+$", text, flags=re.MULTILINE)[1:]
    for (group, fields), section in zip(docs_gen.groups().items(), sections, strict=True):
        for field in fields:
            assert re.search(rf"^(# )?{env_var(field)}=", section, re.MULTILINE), (group, field)


def test_env_example_defaults_round_trip_through_settings(tmp_path: Path) -> None:
    # Uncomment every default that has a value: the result must load to the same settings.
    text = docs_gen.env_example()
    text = text.replace("TASKINFA_API_URL=\n", "TASKINFA_API_URL=http://127.0.0.1:3000/api\n")
    text = text.replace("TASKINFA_API_KEY=\n", "TASKINFA_API_KEY=tk_example_key_123\n")
    # "~" is not expanded by the settings loader; that default is shown for people.
    skipped = {"CLAUDE_CONFIG_SOURCE"}
    lines = []
    uncommented = 0
    for line in text.splitlines():
        match = re.fullmatch(r"# ([A-Z][A-Z0-9_]*)=(.+)", line)
        if match and match.group(1) not in skipped:
            line = line[2:]
            uncommented += 1
        lines.append(line)
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(lines) + "\n")
    assert uncommented > 20
    loaded = Settings(_env_file=env_file, bot_name="bot")
    defaults = Settings(
        _env_file=None,
        bot_name="bot",
        taskinfa_api_url="http://127.0.0.1:3000/api",
        taskinfa_api_key="tk_example_key_123",
    )
    assert loaded.model_dump() == defaults.model_dump()


def test_configuration_md_has_a_row_per_setting_with_env_flag_and_default() -> None:
    text = docs_gen.configuration_md()
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^\| `([A-Z0-9_]+)` \| (.+?) \| (.+?) \| (.+) \|$", line)
        if match:
            rows[match.group(1)] = match.groups()[1:]
    assert sorted(rows) == sorted(env_var(field) for field in Settings.model_fields)
    for field in Settings.model_fields:
        flag, default, description = rows[env_var(field)]
        assert flag == (f"`{flag_name(field)}`" if has_flag(field) else "—"), field
        assert description.startswith(docs_gen.help_text(field).replace("|", "\\|"))
        if docs_gen.is_required(field):
            assert default == "required"
    assert rows["DRAIN_TIMEOUT"][1] == "`3600`"
    assert rows["BOT_NAME"][1] == "the host name"
    assert rows["TASKINFA_API_KEY"][0] == "—"


def test_check_mode_reports_stale_files_and_write_mode_fixes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert docs_gen.main(["--check", "--root", str(tmp_path)]) == 1
    assert "out of date: .env.example" in capsys.readouterr().err
    assert docs_gen.main(["--root", str(tmp_path)]) == 0
    assert docs_gen.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "docs" / "configuration.md").write_text("hand edited\n")
    assert docs_gen.main(["--check", "--root", str(tmp_path)]) == 1
    assert docs_gen.main(["--check", "--root", str(ROOT)]) == 0
