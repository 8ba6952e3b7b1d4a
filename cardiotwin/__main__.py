from cardiotwin.cli import entry

entry()
