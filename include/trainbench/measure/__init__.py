"""Measuring one trainer run: the child process (`runner`), samplers beside it (`sampling`), the idle check
before it (`idle`), what it printed (`protocol`), how it ended (`outcome`) and its memory figures (`memory`)."""
