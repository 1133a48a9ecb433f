r"""One table of several UCI benchmark workdirs (each written by scripts/uci.py), as JSON and Markdown.

  python scripts/uci_table.py --out=runs/uci/table runs/uci/*/*

Rows in the order given; each workdir's uci.json holds its splits, summary and command.
"""

import json
import os

from absl import app, flags

from bnnjax.evaluation import uci as protocol
from bnnjax.sweep import results

_OUT = flags.DEFINE_string("out", "", "Write <out>.json and <out>.md (empty: print the Markdown only).")


def main(argv):
  entries = []
  for workdir in argv[1:]:
    path = os.path.join(workdir, "uci.json")
    if not os.path.isfile(path):
      print(f"{workdir}: no uci.json yet, left out")
      continue
    with open(path, encoding="utf-8") as f:
      entries.append(json.load(f))
  if not entries:
    raise SystemExit("error: none of the workdirs has a uci.json")
  table = protocol.markdown(entries)
  if _OUT.value:
    results.write_json(_OUT.value + ".json", entries)
    results.write_text(_OUT.value + ".md", table)
  print(table, end="")


if __name__ == "__main__":
  app.run(main)
