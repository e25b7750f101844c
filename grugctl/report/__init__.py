"""`grugctl report`: the archive, its run records and the code as a static site a reviewer opens in a browser.

- site.py    what each page shows, gathered from the archive, compare, plot and diff: file name -> bytes
- pages.py   the HTML of the leaderboard and of an experiment's page (escaped strings, no I/O)
- writer.py  the output folder, written whole into a sibling and swapped in by rename
"""
