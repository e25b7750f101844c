"""archive.yaml, the experiments' paper trail. One module a job:

- schema.py   the immutable model (Archive, Entry), the field rules, get_entry
- reader.py   bounded bytes -> validated Archive, every problem one `file:line:column` sentence
- store.py    the round-trip writer: every edit inside the repository transaction, byte-checked
- comments.py keeping a person's comments in place when grugctl inserts or appends
- reports.py  `archive status` / `show` rows and the archive <-> files <-> git warnings
- edits.py    `archive set` (status transitions) and `archive resolve` (SHAs from git)
- markdown.py `archive import-md`

Callers use the names below (`from grugctl import archive; archive.load_archive(...)`).
"""

from grugctl.archive.comments import put_field
from grugctl.archive.edits import TRANSITIONS, resolve_archive, set_entry
from grugctl.archive.markdown import MAX_MARKDOWN, import_markdown, parse_markdown_archive
from grugctl.archive.reader import find_archive, load_archive, parse_archive
from grugctl.archive.reports import entry_dict, show_report, status_report
from grugctl.archive.schema import (
    ARCHIVE_NAME,
    BUCKETS,
    CORE_PENDING,
    FIELDS,
    MAX_VALUE,
    REQUIRED,
    SHA_FIELDS,
    SHA_LEN,
    STATUSES,
    Archive,
    Entry,
    check_field,
    clip,
    display_path,
    get_entry,
    norm_path,
)
from grugctl.archive.store import (
    add_entries,
    add_entry,
    append_result,
    set_fields,
    update_archive,
    update_entries,
    write_fields,
)
from grugctl.errors import GrugError

__all__ = [
    "ARCHIVE_NAME", "BUCKETS", "CORE_PENDING", "FIELDS", "MAX_MARKDOWN", "MAX_VALUE", "REQUIRED",
    "SHA_FIELDS", "SHA_LEN", "STATUSES", "TRANSITIONS", "Archive", "Entry", "GrugError", "add_entries",
    "add_entry", "append_result", "check_field", "clip", "display_path", "entry_dict", "find_archive",
    "get_entry", "import_markdown", "load_archive", "norm_path", "parse_archive", "parse_markdown_archive",
    "put_field", "resolve_archive", "set_entry", "set_fields", "show_report", "status_report",
    "update_archive", "update_entries", "write_fields",
]  # fmt: skip
