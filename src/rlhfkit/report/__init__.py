"""`rlhfkit report`: one self-contained HTML page (and a short Markdown summary) for a client.

`inputs` defines the run folder's layout and reads it tolerantly; `sections` turns what it
found into plain data; `plots` draws the figures (matplotlib, embedded as data URIs); `html`
and `markdown` render. Start with `rlhfkit.report.html.write_report`.
"""
