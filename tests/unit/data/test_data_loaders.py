"""CSV and Parquet loading."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fedswarm.core.errors import DataError
from fedswarm.data.loaders import load_table


def write(tmp_path: Path, text: str, name: str = "bank.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_string_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "amount,hour,kind\n12.5,3,fraud\n7,14,legit\n\n1e2,23,legit\n")
    data = load_table(path, label="kind")
    assert data.name == "bank" and data.feature_names == ("amount", "hour")
    assert data.class_names == ("fraud", "legit")
    assert data.y.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(data.x, np.array([[12.5, 3], [7, 14], [100, 23]], dtype=np.float32))
    assert data.groups is None


def test_csv_feature_selection_group_and_numeric_labels(tmp_path: Path) -> None:
    path = write(tmp_path, 'a,b,"c, quoted",label,site\n1,2,3,2,north\n4,5,6,0,south\n7,8,9,2,north\n')
    data = load_table(path, label="label", features=["c, quoted", "a"], group="site")
    assert data.feature_names == ("c, quoted", "a")
    np.testing.assert_array_equal(data.x[:, 0], [3, 6, 9])
    assert data.y.tolist() == [2, 0, 2] and data.class_names == ("0", "1", "2")  # kept, not renumbered
    assert data.groups is not None and data.groups.tolist() == [0, 1, 0]


def test_negative_labels_are_renumbered_and_classes_fix_the_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,-1\n2,1\n3,1\n")
    data = load_table(path, label="y")
    assert data.y.tolist() == [0, 1, 1] and data.class_names == ("-1", "1")
    fixed = load_table(path, label="y", classes=["1", "-1"])
    assert fixed.y.tolist() == [1, 0, 0] and fixed.class_names == ("1", "-1")
    with pytest.raises(DataError, match=r"label '1' at line 3 is not among classes"):
        load_table(path, label="y", classes=["-1"])


def test_missing_label_column_names_file_column_and_choices(tmp_path: Path) -> None:
    path = write(tmp_path, "amount,hour\n1,2\n")
    with pytest.raises(DataError) as info:
        load_table(path, label="is_fraud")
    message = str(info.value)
    assert str(path) in message and "'is_fraud'" in message and "amount, hour" in message


def test_truncated_row_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,label\n1,2,0\n3,4,1\n5,6\n")
    with pytest.raises(DataError, match=r"bank\.csv: line 4: expected 3 fields, found 2"):
        load_table(path, label="label")


def test_unterminated_quote_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, 'a,label\n1,0\n"2,1\n')
    with pytest.raises(DataError, match=r"bank\.csv: line \d+"):
        load_table(path, label="label")


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"empty\.csv: line 1: the file is empty"):
        load_table(write(tmp_path, "", "empty.csv"), label="y")
    with pytest.raises(DataError, match=r"head\.csv: line 2: no data rows"):
        load_table(write(tmp_path, "a,y\n", "head.csv"), label="y")


def test_non_numeric_feature_names_column_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "amount,merchant,y\n1,shop,0\n2,fuel,1\n")
    with pytest.raises(DataError, match=r"feature column 'merchant' is not numeric: line 2 has 'shop'"):
        load_table(path, label="y")
    gap = write(tmp_path, "amount,y\n1,0\n,1\n", "gap.csv")
    with pytest.raises(DataError, match=r"'amount' is not numeric: line 3 has an empty value"):
        load_table(gap, label="y")
    inf = write(tmp_path, "amount,y\n1,0\ninf,1\n", "inf.csv")
    with pytest.raises(DataError, match=r"non-finite value at line 3"):
        load_table(inf, label="y")


def test_fractional_labels_and_other_mistakes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="non-integer number at line 3"):
        load_table(write(tmp_path, "a,y\n1,1\n2,0.5\n"), label="y")
    with pytest.raises(DataError, match="unsupported file type '.xlsx'"):
        load_table(tmp_path / "bank.xlsx", label="y")
    with pytest.raises(DataError, match="no such file"):
        load_table(tmp_path / "absent.csv", label="y")
    with pytest.raises(DataError, match=r"feature column\(s\) zz not found"):
        load_table(write(tmp_path, "a,y\n1,1\n"), label="y", features=["zz"])


def test_parquet_round_trip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "amount": pa.array([1.5, 2.5, 3.5], type=pa.float64()),
            "count": pa.array([1, 2, 3], type=pa.int32()),
            "present": pa.array([True, False, True]),
            "kind": pa.array(["legit", "fraud", "legit"]),
        }
    )
    path = tmp_path / "bank.parquet"
    pq.write_table(table, path)
    data = load_table(path, label="kind")
    assert data.feature_names == ("amount", "count", "present")
    np.testing.assert_array_equal(data.x, [[1.5, 1, 1], [2.5, 2, 0], [3.5, 3, 1]])
    assert data.class_names == ("fraud", "legit") and data.y.tolist() == [1, 0, 1]
    with pytest.raises(DataError, match=r"label column 'label' not found; available columns: amount"):
        load_table(path, label="label")


def test_parquet_rejects_nulls_and_text_features(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"a": pa.array([1.0, None]), "y": pa.array([0, 1])}), nulls)
    with pytest.raises(DataError, match=r"column 'a' has 1 missing value\(s\), first at row 1"):
        load_table(nulls, label="y")
    text = tmp_path / "text.parquet"
    pq.write_table(pa.table({"a": pa.array(["x", "y"]), "y": pa.array([0, 1])}), text)
    with pytest.raises(DataError, match=r"feature column 'a' is not numeric: row 0 has 'x'"):
        load_table(text, label="y")


def test_corrupt_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable Parquet file"):
        load_table(path, label="y")


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bank.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"pip install fedswarm\[parquet\]"):
        load_table(path, label="y")
