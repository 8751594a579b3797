"""Issue 22, item 6: the launch button appears only where the book names its own public repository."""

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_ext"))
import book_html  # noqa: E402

CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "_config.yml").read_text(encoding="utf-8"))


def test_no_repository_no_launch_button():
    """The book as configured names no repository: every provider is switched off, so the theme adds no button
    (Jupyter Book's default repository, its own, counts as none)."""
    assert "repository" not in CONFIG
    for url in (None, "", book_html.JUPYTER_BOOK_DEFAULT_REPOSITORY + "/"):
        options = {"launch_buttons": CONFIG["launch_buttons"], "repository_url": url}
        buttons = book_html.launch_buttons(options)
        assert not any(buttons[key] for key in book_html._PROVIDERS) and buttons["thebe"] is False, url


def test_a_named_repository_gets_the_binder_button():
    """The failing variant of the above: with a repository named, Binder's URL is kept and the theme builds the
    button from it."""
    options = {"launch_buttons": CONFIG["launch_buttons"], "repository_url": "https://github.com/someone/sgd-noise"}
    buttons = book_html.launch_buttons(options)
    assert buttons["binderhub_url"] == "https://mybinder.org"
    assert buttons["notebook_interface"] == "classic"


def test_binder_installs_the_pinned_stack_and_the_package():
    lines = (Path(__file__).resolve().parents[1] / "binder" / "requirements.txt").read_text().splitlines()
    assert "-r ../requirements.txt" in lines and "-e ." in lines
