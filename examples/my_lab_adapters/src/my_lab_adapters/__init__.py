"""A lab's scicontrast plug-ins: the ``amplicon_table`` adapter."""
