"""Small fixes to the HTML that Jupyter Book 1 writes, so that pages load cleanly in a browser.

* sphinx-thebe and sphinx-togglebutton register their inline scripts twice (``const THEBE_JS_URL`` declared twice is a
  JavaScript error on every page): drop exact duplicates from each page's script list;
* the colour mode defaults to light instead of an empty value (a console error on a first visit);
* the Binder launch button only where the book names its own public repository (``repository: url`` in
  ``_config.yml``): without one, Jupyter Book's default would point the button at Jupyter Book's own repository,
  so every launch provider is switched off and the theme shows no launch button at all.
"""

#: Jupyter Book's default ``repository.url``: not this book's repository.
JUPYTER_BOOK_DEFAULT_REPOSITORY = "https://github.com/executablebooks/jupyter-book"
_PROVIDERS = ("binderhub_url", "jupyterhub_url", "colab_url", "jupyterlite_url")


def launch_buttons(theme_options: dict) -> dict:
    """The ``launch_buttons`` theme options to use: as configured when the book names its repository, with every
    provider switched off (no button, not a blank one) when it does not."""
    buttons = dict(theme_options.get("launch_buttons") or {})
    url = str(theme_options.get("repository_url") or "").rstrip("/")
    if not url or url == JUPYTER_BOOK_DEFAULT_REPOSITORY:
        buttons.update({key: "" for key in _PROVIDERS}, thebe=False)
    return buttons


def _set_launch_buttons(app, config):
    config.html_theme_options["launch_buttons"] = launch_buttons(config.html_theme_options)



def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # the same inline script is registered once with filename None and once with ""
        key = (getattr(js, "filename", js) or None, tuple(sorted(getattr(js, "attributes", {}).items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    context["script_files"] = unique


# sphinx-book-theme leaves pydata-sphinx-theme's default colour mode empty, so on a reader's first visit
# (nothing in localStorage) the theme logs "Got invalid theme mode" as a console error. Default to light.
_DEFAULT_MODE = 'if (!document.documentElement.dataset.mode) { document.documentElement.dataset.mode = "light"; }'


def setup(app):
    app.add_js_file(None, body=_DEFAULT_MODE, priority=0)
    app.connect("config-inited", _set_launch_buttons)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
