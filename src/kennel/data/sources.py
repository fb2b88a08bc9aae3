"""Where the table comes from: the bundled scikit-learn sets, local files and fsspec URLs.

:class:`Source` reads CSV (also compressed, and ``.tsv``) and Parquet into one pandas frame with
string column names, and turns every reading failure into a one-line :class:`DataError`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from kennel.config import DataConfig
from kennel.data.formats import (
    PARQUET_SUFFIXES,
    Format,
    check_duplicates,
    require_format,
    strip_suffixes,
)
from kennel.errors import DataError
from kennel.suggest import did_you_mean
from kennel.util import first_line

BUILTIN_PREFIX = "builtin:"
#: Target column name of every builtin data set.
BUILTIN_TARGET = "target"


def _sklearn_frame(loader_name: str) -> pd.DataFrame:
    """A bundled scikit-learn data set as one frame whose target uses the human labels."""
    from sklearn import datasets

    bunch = getattr(datasets, loader_name)(as_frame=True)
    frame = bunch.frame.copy()
    target = bunch.target
    names = getattr(bunch, "target_names", None)
    if names is not None and loader_name != "load_diabetes":
        labels = np.asarray(names, dtype=object)[np.asarray(target, dtype=np.int64)]
        frame[BUILTIN_TARGET] = pd.Series(labels, index=frame.index, dtype="str")
    else:
        frame[BUILTIN_TARGET] = np.asarray(target, dtype=np.float64)
    return frame


#: Builtin data sets: name -> scikit-learn loader (bundled with the package, no network).
BUILTINS: dict[str, str] = {
    "breast_cancer": "load_breast_cancer",
    "wine": "load_wine",
    "iris": "load_iris",
    "diabetes": "load_diabetes",
}


def _source_parts(source: str) -> tuple[str, str]:
    """(kind, location): kind is ``builtin``, ``path`` (local) or ``url`` (fsspec)."""
    if source.startswith(BUILTIN_PREFIX):
        return "builtin", source[len(BUILTIN_PREFIX) :]
    scheme = urlparse(source).scheme
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter
        return "path", source
    return "url", source


#: Tables read ahead by :func:`preload` (the search's warm trial server), by source key,
#: with what their reading detected.
_PRELOADED: dict[tuple[Any, ...], tuple[pd.DataFrame, dict[str, Any]]] = {}


def preload(config: DataConfig) -> bool:
    """Read ``config``'s table once in this process; :meth:`Source.read` of the same source
    (in this process or a child forked from it) then returns it without reading again.
    False when the source cannot be held that way (no stable key: each read reads).
    Either way, what a read of it imports is imported here (:meth:`Source.import_readers`),
    so a forked child imports nothing to read it."""
    source = Source(config)
    source.import_readers()
    key = source.cache_key()
    if key is None:
        return False
    if key not in _PRELOADED:
        _PRELOADED[key] = (source.read(), source.read_info)
    return True


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _size_mtime(file: str) -> tuple[int, int]:
    stat = Path(file).stat()
    return stat.st_size, stat.st_mtime_ns


class Source:
    """The configured ``data.source``: its kind, display name and a reader."""

    def __init__(self, config: DataConfig) -> None:
        self.config = config
        self._kind, self._location = _source_parts(config.source)
        self.read_info: dict[str, Any] = {"format": "builtin"} if self._kind == "builtin" else {}
        """What reading detected (a CSV's dialect, a workbook's sheet): ``source.json``."""
        if self._kind == "builtin":
            self.name = self._location
            self.uri = config.source
            self.display = config.source
            self._format_suffix = ""
        else:
            if self._kind == "path":
                path = Path(self._location).expanduser()
                if not _is_glob(self._location):
                    path = path.resolve()
                self.uri = str(path)
                parts = PurePosixPath(path.as_posix()).parts
            else:
                self.uri = self._location
                parts = PurePosixPath(urlparse(self._location).path).parts
            # A glob names its data set by the last folder before the pattern.
            plain = [p for p in parts if not _is_glob(p)] if _is_glob(self._location) else parts
            name = plain[-1] if plain else ""
            stem, self._format_suffix = strip_suffixes(name)
            self.name = stem
            self.display = (
                self._location if self.is_dataset else (parts[-1] if parts else self._location)
            ) or self._location

    @property
    def is_builtin(self) -> bool:
        return self._kind == "builtin"

    @property
    def is_dataset(self) -> bool:
        """A Parquet data set of many files: a local folder, a glob, or a URL ending in
        ``/``. (A remote folder without the slash is found when it is read.)"""
        if self._kind == "builtin":
            return False
        if _is_glob(self._location) or self._location.endswith("/"):
            return True
        return self._kind == "path" and Path(self.uri).is_dir()

    def check_for_cluster(self) -> None:
        """What a cluster needs of ``data.source``, checked before one starts: a Parquet data
        set (a folder, a glob or a URL ending in /: a remote folder needs its slash here)
        whose files exist, when it is local (remote ones are listed when read)."""
        if self._kind == "path" and not _is_glob(self._location) and not Path(self.uri).exists():
            raise DataError(f"data set not found: {self._location}")
        if not self.is_dataset:
            raise DataError(
                f"{self.display}: with resource.cluster, data.source must be a Parquet data "
                "set (a folder, a glob or a URL ending in /)"
            )
        if self._kind == "path":
            self.dataset_files()

    def dataset_files(self) -> tuple[Any, list[str]]:
        """(fsspec filesystem, the data set's Parquet files in sorted order): the order every
        reader uses, so rows come in the same order in pandas and in Dask."""
        import fsspec

        if self._kind == "path":
            fs = fsspec.filesystem("file")
            location = self.uri
        else:
            fs, location = self._url_fs()
        try:
            if _is_glob(location):
                found = fs.glob(location)
            elif fs.isdir(location):
                found = fs.find(location)
            else:
                raise DataError(f"data set not found: {self._location}")
        except DataError:
            raise
        except Exception as exc:  # network or credential failures of any filesystem
            raise DataError(
                f"{self._location}: cannot list the data set ({first_line(exc)})"
            ) from None
        files = sorted(
            f
            for f in found
            if PurePosixPath(f).suffix.lower() in PARQUET_SUFFIXES
            and not PurePosixPath(f).name.startswith((".", "_"))
        )
        if not files:
            raise DataError(
                f"{self._location}: no Parquet files ({', '.join(sorted(PARQUET_SUFFIXES))}) "
                "in the data set"
            )
        return fs, files

    def storage_options(self) -> dict[str, Any]:
        """fsspec options for this source (secrets unwrapped): for Dask's readers."""
        return self._storage_options()

    def cache_key(self) -> tuple[Any, ...] | None:
        """What identifies this table for :func:`preload`: the source, how it is read and,
        for a local file, its size and modification time (remote files: never cached)."""
        if self._kind == "builtin":
            return ("builtin", self._location)
        if self._kind != "path":
            return None
        if self.is_dataset:
            try:
                _, files = self.dataset_files()
                stats = tuple((f, *_size_mtime(f)) for f in files)
            except (DataError, OSError):
                return None
            return ("dataset", self.uri, stats)
        try:
            stat = Path(self.uri).stat()
        except OSError:
            return None
        how = (self.config.format, self.config.csv.model_dump_json(), self.config.sheet)
        return ("path", self.uri, *how, stat.st_size, stat.st_mtime_ns)

    def read(self) -> pd.DataFrame:
        """The whole table as pandas reads it (builtins: the scikit-learn frame)."""
        if _PRELOADED and (key := self.cache_key()) in _PRELOADED:
            # pandas copy-on-write: a shallow copy is never changed through the cached one.
            frame, self.read_info = _PRELOADED[key]
            return frame.copy(deep=False)
        if self._kind == "builtin":
            return self._load_builtin()
        if self.is_dataset:
            return self._read_dataset()
        return self._read_file()

    def import_readers(self) -> None:
        """Import the libraries :meth:`read` will use, in the calling thread (a read in
        another thread then imports no module of its own)."""
        import fsspec  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        import kennel.data.readers  # noqa: F401

        try:
            fmt = "builtin" if self._kind == "builtin" else self._format()
        except DataError:
            return  # read() says so
        if fmt == "builtin":
            from sklearn import datasets  # noqa: F401
        elif fmt == "csv":
            import duckdb  # noqa: F401
        elif fmt == "excel":
            import python_calamine  # noqa: F401

            import kennel.data.workbooks  # noqa: F401

    def _read_dataset(self) -> pd.DataFrame:
        """Every file of a Parquet data set, in sorted order, as one frame (in-process path;
        with a cluster, ``kennel.score.distributed`` reads the same files partition by partition)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from kennel.data.readers import arrow_to_pandas

        if self.config.format in ("csv", "excel"):
            raise DataError(
                f"{self._location}: a data set of many files must be Parquet; got "
                f"data.format={self.config.format}"
            )
        fs, files = self.dataset_files()
        tables = []
        for file in files:
            try:
                with fs.open(file, "rb") as handle:
                    parquet = pq.ParquetFile(handle)
                    check_duplicates(file, list(parquet.schema_arrow.names))
                    tables.append(parquet.read())
            except DataError:
                raise
            except Exception as exc:
                raise DataError(f"{file}: cannot read it as PARQUET: {first_line(exc)}") from None
        try:
            table = pa.concat_tables(tables, promote_options="default")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(
                f"{self._location}: the files' columns do not agree: {first_line(exc)}"
            ) from None
        tables.clear()
        frame = arrow_to_pandas(table)
        frame.columns = [str(c) for c in frame.columns]
        self.read_info = {"format": "parquet", "files": len(files)}
        return frame

    def _url_fs(self) -> tuple[Any, str]:
        import fsspec

        try:
            return fsspec.core.url_to_fs(self._location, **self._storage_options())
        except ImportError as exc:
            protocol = urlparse(self._location).scheme
            raise DataError(
                f"{self._location}: reading '{protocol}://' URLs needs a package that is not "
                f"installed ({str(exc).splitlines()[0]})"
            ) from None
        except ValueError as exc:
            raise DataError(f"{self._location}: {str(exc).splitlines()[0]}") from None

    def _load_builtin(self) -> pd.DataFrame:
        name = self._location
        if name not in BUILTINS:
            raise DataError(
                f"unknown builtin data set '{name}'{did_you_mean(name, BUILTINS)}; expected "
                f"one of: {', '.join(sorted(BUILTINS))}"
            )
        return _sklearn_frame(BUILTINS[name])

    def _storage_options(self) -> dict[str, Any]:
        """Secrets unwrapped for fsspec; ``true``/``false`` become booleans (e.g. ``anon``)."""
        options: dict[str, Any] = {}
        for key, secret in self.config.storage_options.items():
            value: Any = secret.get_secret_value()
            if isinstance(value, str) and value.lower() in {"true", "false"}:
                value = value.lower() == "true"
            options[key] = value
        return options

    def _format(self) -> Format:
        return require_format(self.display, "data file", self.config.format)

    def _read_file(self) -> pd.DataFrame:
        from kennel.data.readers import File, read_file

        fmt = self._format()
        if self._kind == "path":
            path = Path(self.uri)
            if not path.exists():
                raise DataError(f"data file not found: {path}")
            fs, fs_path = self._local_fs(), str(path)
        else:
            fs, fs_path = self._url_fs()
            try:
                if fs.isdir(fs_path):  # a remote folder named without its trailing slash
                    return self._read_dataset()
                exists = fs.exists(fs_path)
            except Exception as exc:  # network or credential failures of any filesystem
                raise DataError(
                    f"{self._location}: cannot reach the file ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''})"
                ) from None
            if not exists:
                raise DataError(f"data file not found: {self._location}")
        try:
            frame, self.read_info = read_file(File(fs, fs_path, self.display), fmt, self.config)
        except DataError:
            raise
        except pd.errors.EmptyDataError:
            raise DataError(f"{self.display}: the file is empty") from None
        except Exception as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{self.display}: cannot read it as {fmt.upper()}: {detail}") from None
        return frame

    @staticmethod
    def _local_fs() -> Any:
        import fsspec

        return fsspec.filesystem("file")


__all__ = ["BUILTINS", "BUILTIN_TARGET", "Source", "check_duplicates"]


def frame_digest(frame: pd.DataFrame) -> str:
    """Stable content hash of a table read: column names, dtypes and every value, index
    included (the run's ``kennel.dataset_digest``)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    hashed = pd.util.hash_pandas_object(frame, index=True)
    digest.update(np.ascontiguousarray(hashed.to_numpy(dtype=np.uint64)).tobytes())
    return digest.hexdigest()[:16]
