"""Helpers shared by the interoperability tests (standard library + kombu + psycopg2 only).

Each test module calls Sandbox.create(NAME) once: it checks that the project's services are up
(`scripts/services.sh status`), creates the RabbitMQ vhost and Postgres database NAME
(`scripts/services.sh sandbox NAME`), runs `toolbox --env test setup` there, and empties the sandbox's
queues and result table, so every run starts from the same state.

Programs are started with Proc (own session, output to a log file) and stopped by pid; whatever is left
of their process group afterwards is killed by that group id.

Environment:
  TOOLBOX_SOURCE_DIR  the repository (default: two levels above this file)
  TOOLBOX_BIN         the folder with `toolbox` and `msg-worker` (default: $TOOLBOX_SOURCE_DIR/build/bin)
"""
import ctypes
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import warnings

# kombu 5.2 on Python 3.11 warns about entry_points() on every import; it is not ours to fix.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=ResourceWarning)

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("TOOLBOX_SOURCE_DIR") or os.path.join(HERE, "..", ".."))
BIN_DIR = os.path.abspath(os.environ.get("TOOLBOX_BIN") or os.path.join(SOURCE_DIR, "build", "bin"))
SERVICES = os.path.join(SOURCE_DIR, "scripts", "services.sh")
PYTHON = "/usr/bin/python3"  # Debian's, with celery 5.2 / kombu / sqlalchemy / psycopg2
TOPOLOGY_QUEUES = ("celery", "platform.fifo", "msg", "export")


class SetupError(RuntimeError):
    pass


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Poll predicate() until it returns a true value (returned); AssertionError after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def utcnow():
    """Naive UTC, as celery_taskmeta.date_done is stored."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def parse_date_done(text):
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f") if "." in text else \
        datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


def _run(argv, env=None, timeout=120, check=True):
    r = subprocess.run(argv, env=env, cwd=SOURCE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise SetupError("%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(shlex.quote(a) for a in argv), r.returncode,
            r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")))
    return r


class Sandbox:
    """One isolated vhost + database, and the environment for programs that use it."""

    def __init__(self, name, exports):
        self.name = name
        self.broker_url = exports["TOOLBOX_BROKER_URL"]
        self.backend_url = exports["TOOLBOX_RESULT_BACKEND"]   # worker role: SELECT/INSERT/UPDATE only
        self.admin_url = exports["TOOLBOX_DATABASE_ADMIN_URL"]  # owner role
        self.env = dict(os.environ)
        self.env.update(exports)
        self.env["TOOLBOX_CONFIG_DIR"] = os.path.join(SOURCE_DIR, "config")
        self.env.pop("TOOLBOX_ENV", None)
        self.tmpdir = tempfile.mkdtemp(prefix="interop_%s_" % name)
        self._db = None

    @classmethod
    def create(cls, name):
        for prog in ("toolbox", "msg-worker"):
            if not os.access(os.path.join(BIN_DIR, prog), os.X_OK):
                raise SetupError("%s not found in %s: build the project and set TOOLBOX_BIN" % (prog, BIN_DIR))
        st = subprocess.run(["bash", SERVICES, "status"], cwd=SOURCE_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=120)
        if st.returncode != 0:
            raise SetupError("the project's RabbitMQ/PostgreSQL are not running (`scripts/services.sh status` "
                             "exited %d); start them with `bash scripts/services.sh start`:\n%s"
                             % (st.returncode, st.stdout.decode(errors="replace")))
        out = _run(["bash", SERVICES, "sandbox", name], timeout=300).stdout.decode()
        exports = {}
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("export "):
                for word in shlex.split(line[len("export "):]):
                    k, _, v = word.partition("=")
                    exports[k] = v
        for k in ("TOOLBOX_BROKER_URL", "TOOLBOX_RESULT_BACKEND", "TOOLBOX_DATABASE_ADMIN_URL"):
            if k not in exports:
                raise SetupError("`services.sh sandbox %s` printed no %s:\n%s" % (name, k, out))
        sb = cls(name, exports)
        sb.toolbox("setup", timeout=120)
        sb.reset()
        return sb

    # ---- programs -------------------------------------------------------------------------------
    def bin(self, prog):
        return os.path.join(BIN_DIR, prog)

    def toolbox(self, *args, timeout=120, check=True):
        """Run `toolbox --env test ARGS...`; returns the CompletedProcess (stdout/stderr as text)."""
        r = subprocess.run([self.bin("toolbox"), "--env", "test"] + [str(a) for a in args], env=self.env,
                           cwd=SOURCE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                           universal_newlines=True)
        if check and r.returncode != 0:
            raise AssertionError("toolbox %s exited %d\nstdout:\n%s\nstderr:\n%s"
                                 % (" ".join(map(str, args)), r.returncode, r.stdout, r.stderr))
        return r

    def send(self, task, *opts):
        """`toolbox send TASK OPTS...` -> the task id it printed."""
        r = self.toolbox("send", task, *opts)
        lines = r.stdout.split()
        if len(lines) != 1 or len(lines[0]) != 36:
            raise AssertionError("toolbox send printed %r, expected one task id" % r.stdout)
        return lines[0]

    def result(self, task_id, timeout=30):
        """`toolbox result ID --wait --timeout T` -> (exit status, parsed JSON)."""
        r = self.toolbox("result", task_id, "--wait", "--timeout", timeout, timeout=timeout + 60, check=False)
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            raise AssertionError("toolbox result printed no JSON (exit %d)\nstdout:\n%s\nstderr:\n%s"
                                 % (r.returncode, r.stdout, r.stderr))
        return r.returncode, doc

    def start(self, name, argv, extra_env=None):
        env = dict(self.env)
        env.update(extra_env or {})
        return Proc(name, argv, env, os.path.join(self.tmpdir, name + ".log"))

    def start_msg_worker(self, *flags, name="msg-worker"):
        return self.start(name, [self.bin("msg-worker"), "--env", "test", "--loglevel", "info"] + list(flags))

    # ---- broker ---------------------------------------------------------------------------------
    def connection(self):
        import kombu
        return kombu.Connection(self.broker_url, connect_timeout=10)

    def queue_info(self, queue):
        """(ready messages, consumers) of a queue, by a passive declare."""
        with self.connection() as c:
            _, messages, consumers = c.default_channel.queue_declare(queue=queue, passive=True)
            return messages, consumers

    def purge(self, *queues):
        with self.connection() as c:
            ch = c.default_channel
            for q in queues or TOPOLOGY_QUEUES:
                ch.queue_purge(q)

    def wait_consumers(self, queue, proc, n=1, timeout=60):
        def ready():
            if not proc.alive():
                raise AssertionError("%s exited (status %s) before consuming %s\n%s"
                                     % (proc.name, proc.p.returncode, queue, proc.tail()))
            return self.queue_info(queue)[1] >= n
        wait_for(ready, timeout, 0.1, "a consumer on queue %s (%s)" % (queue, proc.name))

    # ---- database -------------------------------------------------------------------------------
    def db(self):
        """A psycopg2 connection as the owner role (autocommit), kept open."""
        import psycopg2
        if self._db is None or self._db.closed:
            self._db = psycopg2.connect(self.admin_url, connect_timeout=10)
            self._db.autocommit = True
        return self._db

    def sql(self, query, params=()):
        cur = self.db().cursor()
        cur.execute(query, params)
        rows = cur.fetchall() if cur.description else None
        cur.close()
        return rows

    def reset(self):
        """Empty the sandbox's queues and result table (they belong to this sandbox only)."""
        busy = [(q, self.queue_info(q)[1]) for q in TOPOLOGY_QUEUES]
        busy = [(q, n) for q, n in busy if n]
        if busy:
            raise SetupError("sandbox %s: queues %s already have consumers; a worker from another run is still "
                             "connected to this vhost (stop it first)" % (self.name, busy))
        self.purge()
        self.sql("TRUNCATE celery_taskmeta")

    def close(self):
        """Close the database connection; remove the log folder unless INTEROP_KEEP_LOGS is set."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if os.environ.get("INTEROP_KEEP_LOGS"):
            sys.stderr.write("interop: logs of sandbox %s kept in %s\n" % (self.name, self.tmpdir))
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def _group_members(pgid):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(d))
    return pids


def _die_with_parent():
    """In the child, before exec: SIGKILL when the test process dies (e.g. killed by a ctest TIMEOUT),
    so no worker outlives its test and disturbs the next run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Proc:
    """A program started in a session of its own, its output in a log file; it dies with the test."""

    def __init__(self, name, argv, env, logpath):
        self.name = name
        self.argv = argv
        self.logpath = logpath
        self._log = open(logpath, "ab")
        self.p = subprocess.Popen(argv, env=env, cwd=SOURCE_DIR, stdin=subprocess.DEVNULL, stdout=self._log,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  preexec_fn=_die_with_parent)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        return self.p.wait(timeout)

    def group_left(self):
        """Processes still in the process group the program led (its pool children)."""
        return _group_members(self.pid)

    def stop(self, timeout=30):
        """SIGTERM, then SIGKILL after timeout s; then kill what is left of its process group."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(30)
        if self.group_left():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.p.returncode

    def tail(self, n=60):
        try:
            with open(self.logpath, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "----- last %d lines of %s (%s) -----\n%s\n-----" % (
            min(n, len(lines)), self.logpath, self.name, "\n".join(lines[-n:]))


def main():
    """unittest.main with verbose output; exits non-zero on any failure or error."""
    unittest.main(verbosity=2, warnings=False)  # False: keep the filters above
