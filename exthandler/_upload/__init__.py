"""Status upload: the aggregate status document (PROTOCOL.md section 10) and the task that
uploads it beside the engine (see docs/fleet.md, "Status upload").

- `document`: the document, built from the instance view (pure);
- `targets`: where it goes (an Azure blob by SAS URL, a file) and how it is written;
- `uploader`: when it goes (on change, heartbeat, retries with backoff).
"""
