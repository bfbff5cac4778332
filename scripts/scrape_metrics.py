"""Scrapes a Prometheus endpoint and prints every sample as JSON, parsed by the
official prometheus_client parser (an independent check of the exposition text).

Usage: scrape_metrics.py URL
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
        content_type = response.headers.get("Content-Type", "")
        text = response.read().decode()
    samples = [
        {"name": sample.name, "labels": sample.labels, "value": sample.value}
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]
    print(json.dumps({"content_type": content_type, "samples": samples}))


if __name__ == "__main__":
    main()
