"""The documents a newcomer reads: the README short and its links live, the
module map true to the code, user documents about features, not issue numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_opens_with_the_two_commands_and_stays_short():
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```")[1]
    assert "bash scripts/demo.sh" in first_block and "bash scripts/test.sh" in first_block
    assert len(text.splitlines()) <= 300


def test_every_local_link_in_the_documents_leads_somewhere():
    broken = []
    for doc in USER_DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.name}: {target}")
    assert broken == []


def test_user_documents_speak_of_features_not_issue_numbers():
    found = [f"{doc.name}: {m}" for doc in USER_DOCS for m in re.findall(r"\bissues? [0-9]+", doc.read_text())]
    assert found == []


def test_the_module_map_is_what_the_code_says():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "layout.py"), "--check"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_help_texts_flow_and_keep_their_brackets():
    """Help is plain text reflowed to the terminal: a docstring's line breaks are not
    kept mid-sentence, and a config section in brackets is not taken for markup."""
    relay = str(Path(sys.executable).with_name("relay"))
    proc = subprocess.run([relay, "edge", "prune", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "Remove what [retention] lets go of" in proc.stdout
    assert "played bundles' data, the oldest transcripts" in proc.stdout  # one line at 200 columns
