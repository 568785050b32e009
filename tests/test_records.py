"""Raw records round-trip through gzip JSONL, and a reader skips fields a newer version added."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from bench.results.records import RequestRecord, read_records, write_records


def test_round_trip_and_newer_fields(tmp_path: Path) -> None:
    record = RequestRecord(request_id=1, repetition=0, batch_index=0, batch_size=1, input_tokens=3,
                           expected_output_tokens=2, submit_time=0.0, first_token_time=0.1, end_time=0.2,
                           token_times=[0.1, 0.2], output_tokens=2)
    path = tmp_path / "records.jsonl.gz"
    write_records(path, [record])
    assert list(read_records(path)) == [record]
    newer = {**record.to_json(), "a_field_from_the_future": 42}
    path.write_bytes(gzip.compress((json.dumps(newer) + "\n").encode()))
    assert list(read_records(path)) == [record]
