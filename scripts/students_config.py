"""Print the book's configuration for the students' build (``make book-students``): ``_config.yml`` with
sphinx-exercise's ``hide_solutions`` on and the execution cache of the main build, so that no page is executed
again. Usage: ``python scripts/students_config.py _config.yml CACHE_DIR > _build/_config_students.yml``."""

import sys
from pathlib import Path

import yaml


def main(config: str, cache: str) -> str:
    with open(config, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    cfg.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    # this file is read from _build/, and Jupyter Book resolves local extensions next to the config file
    root = Path(config).resolve().parent
    cfg["sphinx"]["local_extensions"] = {name: str(root / path)
                                        for name, path in cfg["sphinx"].get("local_extensions", {}).items()}
    cfg["sphinx"]["local_extensions"]["students"] = str(root / "_ext")  # the gated solutions, left out
    cfg.setdefault("execute", {})["cache"] = cache
    cfg["title"] = cfg.get("title", "") + " (without solutions)"
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/students_config.py _config.yml CACHE_DIR")
    sys.stdout.write(main(sys.argv[1], sys.argv[2]))
