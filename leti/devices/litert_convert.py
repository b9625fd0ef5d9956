"""The converter process: runs in the converter environment (``leti.devices.litert_env``), converts
pickled PyTorch networks to ``.tflite`` with ``litert-torch``, one request per line.

Started once and kept: importing torch and litert-torch takes seconds, a conversion several more.
Request (one JSON line on stdin): ``{"module": PATH, "example": PATH, "output": PATH}``, the first
two written by ``torch.save``. Reply (one JSON line): ``{"ok": true}`` or ``{"error": MESSAGE}``.
The converter's own chatter goes to stderr, so stdout carries only replies. Unpickling a network
imports its classes, so leti's source folder must be on ``PYTHONPATH``; this file imports nothing
else from leti (the converter environment has torch and litert-torch, not leti's dependencies).
"""

import json
import os
import sys


def main() -> None:
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints must not reach the replies
    import torch

    torch.set_num_threads(1)  # the measuring process keeps the other cores
    import litert_torch

    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        try:
            request = json.loads(line)
            network = torch.load(request["module"], weights_only=False)
            example = torch.load(request["example"])
            inputs = example if isinstance(example, tuple) else (example,)  # a kernel may read two tensors
            litert_torch.convert(network.eval(), inputs).export(request["output"])
            reply = {"ok": True}
        except Exception as error:  # noqa: BLE001 - the client turns this into an error row
            reply = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
