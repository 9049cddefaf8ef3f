"""Label Studio interop: labelling config, tasks, predictions out; annotations in (pull and webhook)."""
