"""One module per ``rlr-video`` sub-command; each offers ``add_parser(subparsers)``.

``add_parser`` registers the sub-command and sets ``func`` (taking the parsed args, returning
an exit code) as the parser default. Heavy imports belong inside ``func`` so that
``rlr-video --help`` and config validation stay fast.
"""
