#!/usr/bin/env python3
"""Send TRAIN with the Python SDK (pip install ./sdk/python).

    python3 examples/submit_transfer.py --to <64-hex address> --amount 1.5 \
        [--key researcher.key] [--gateway http://127.0.0.1:8080]

Without --key it signs with the devnet's researcher key (`trainmesh devnet` funds it).
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal

from trainmesh import Client, GatewayError, Key

BASE_UNITS_PER_TRAIN = 10**9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--to", required=True, help="recipient address (64 hex characters)")
    p.add_argument("--amount", required=True, help="TRAIN to send, e.g. 1.5")
    p.add_argument("--key", help="key file: the sender's secret as 64 hex characters")
    p.add_argument("--gateway", default="http://127.0.0.1:8080")
    args = p.parse_args()

    key = Key.from_hex(open(args.key).read()) if args.key else Key.devnet("researcher")
    amount = int(Decimal(args.amount) * BASE_UNITS_PER_TRAIN)
    client = Client(args.gateway)

    before = client.balance(args.to)
    try:
        tx_hash = client.transfer(key, args.to, amount)
    except GatewayError as e:
        raise SystemExit(f"refused: {e.code}: {e.message}")
    print(f"submitted {tx_hash} from {key.address_hex}")

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        after = client.balance(args.to)
        if after != before:
            print(f"committed: {args.to} now holds {Decimal(after) / BASE_UNITS_PER_TRAIN} TRAIN")
            return
        time.sleep(0.5)
    raise SystemExit("not committed after 60 s")


if __name__ == "__main__":
    main()
