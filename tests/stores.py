"""The stores MLflow needs, started by the tests on the host: Debian's PostgreSQL and moto's S3
server, each listening on one address (loopback, or the gateway of the container test's podman
network, which its pods reach and nothing outside does)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dermaops.net import free_port, stop, wait_until_ready
from tests.k8s.conftest import find_tool, unavailable

S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def postgres_bin() -> Path:
    """Debian's PostgreSQL server programs (package `postgresql`, not on PATH): fail in CI,
    skip elsewhere."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        unavailable("Debian's postgresql is not installed (apt-get install postgresql)")
    return found[-1].parent


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    password: str

    def uri(self, database: str, user: str = "mlflow") -> str:
        return f"postgresql://{user}:{self.password}@{self.host}:{self.port}/{database}"


@contextmanager
def postgres(host: str, subnet: str, databases: tuple[str, ...]) -> Iterator[Postgres]:
    """A PostgreSQL cluster of its own, run as the `postgres` user in a folder it owns (the test's
    own are root's, mode 0700), listening on ``host`` only, with password logins from ``subnet``;
    user `mlflow` owns ``databases``. The folder goes when it stops."""
    bindir, port, password = postgres_bin(), free_port(), "ci-postgres-password"
    folder = Path(tempfile.mkdtemp(prefix="dermaops-postgres-"))
    data, socket = folder / "data", folder / "socket"
    socket.mkdir()
    shutil.chown(folder, "postgres")
    shutil.chown(socket, "postgres")

    def as_postgres(*command: str) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *command], capture_output=True,
                              text=True, timeout=120, check=False, cwd=folder)  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(command[:2])} failed:\n{done.stdout}{done.stderr}")

    as_postgres(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8")  # fmt: skip
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all mlflow {subnet} scram-sha-256\n")
    options = f"-c listen_addresses={host} -c port={port} -c unix_socket_directories={socket}"
    as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "postgres.log"),
                "-o", options, "-w", "start")  # fmt: skip
    try:
        psql = [str(bindir / "psql"), "-h", str(socket), "-p", str(port), "-U", "postgres",
                "-v", "ON_ERROR_STOP=1", "-c"]  # fmt: skip
        as_postgres(*psql, f"CREATE ROLE mlflow LOGIN PASSWORD '{password}'")
        for database in databases:
            as_postgres(*psql, f"CREATE DATABASE {database} OWNER mlflow")
        yield Postgres(host, port, password)
    finally:
        try:
            as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def s3(folder: Path, host: str, bucket: str) -> Iterator[str]:
    """moto's S3 server on ``host`` with ``bucket`` made; its endpoint URL."""
    port, log = free_port(), folder / "moto.log"
    endpoint = f"http://{host}:{port}"
    env = os.environ | S3_KEYS
    with log.open("w") as out:
        command = [find_tool("moto_server", venv="storage"), "-H", host, "-p", str(port)]
        moto = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_ready(f"{endpoint}/moto-api/", 60, moto, log)
        make = "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1]).create_bucket(" \
               "Bucket=sys.argv[2])"  # fmt: skip
        subprocess.run([find_tool("python", venv="storage"), "-c", make, endpoint, bucket],
                       env=env, check=True, timeout=60)  # fmt: skip
        yield endpoint
    finally:
        stop(moto)
