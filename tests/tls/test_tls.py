"""TLS end to end against a private, TLS-only-for-this-test instance of the project's services.

setUpModule starts RabbitMQ + PostgreSQL with `scripts/services.sh start` in a folder of its own under
/tmp (TOOLBOX_TLS=1: a test CA, server and client certificates, an amqps listener and ssl = on;
TOOLBOX_TLS_CLIENT_CERT=required: TLS clients must present a certificate from that CA), on free ports
of its own, with a RabbitMQ user and PostgreSQL passwords made up for this run. It writes a toolbox
configuration file (amqps://, broker_ssl_*, sslmode=verify-full), runs `toolbox setup` and starts
msg-worker with it. The tests then check that `toolbox send`, `toolbox inspect`/`ping` and a Python
Celery 5.2 client work over TLS, that every connection of the worker is TLS, that a client which does
not trust the server's CA, or presents no or a foreign client certificate, is refused with a one-line
error, that PostgreSQL with sslmode=verify-full and a foreign root certificate is refused, and that no
password shows in `config show`, error messages, the worker's log or process titles. The instance is
stopped with `services.sh stop` and its folder removed at the end (TLS_KEEP=1 keeps the folder).

Instances left behind by a run that was killed (their owner pid is gone, and they were not stopped) are
stopped and removed at the next run.

Environment: TOOLBOX_SOURCE_DIR (the repository), TOOLBOX_BIN_DIR (toolbox and msg-worker).
Exits 77 (skipped) when not root or when RabbitMQ, PostgreSQL 15, openssl or celery are missing.
"""
import glob
import json
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=ResourceWarning)

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("TOOLBOX_SOURCE_DIR") or os.path.join(HERE, "..", ".."))
BIN_DIR = os.path.abspath(os.environ.get("TOOLBOX_BIN_DIR") or os.path.join(SOURCE_DIR, "build", "bin"))
SERVICES = os.path.join(SOURCE_DIR, "scripts", "services.sh")
TOOLBOX = os.path.join(BIN_DIR, "toolbox")
WORKER = os.path.join(BIN_DIR, "msg-worker")
PG_BINDIR = os.environ.get("TOOLBOX_PG_BINDIR", "/usr/lib/postgresql/15/bin")
KEEP = os.environ.get("TLS_KEEP") == "1"
DIR_PREFIX = "tbx-tls-"


def skip(why):
    print("SKIP: " + why, file=sys.stderr)
    sys.exit(77)


class Instance:
    """The private services: folder, ports, passwords, and the environment services.sh needs."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix=DIR_PREFIX, dir="/tmp")
        os.chmod(self.dir, 0o755)  # the postgres user must reach its data folder
        self.amqp, self.pg = pick_ports()
        self.amqps = self.amqp - 1
        self.rabbit_user = "tbxtls"
        self.rabbit_pw = "Rb" + secrets.token_hex(10)
        self.pg_worker_pw = "Pw" + secrets.token_hex(10)
        self.pg_owner_pw = "Po" + secrets.token_hex(10)
        self.env = {
            "TOOLBOX_SERVICES_DIR": self.dir,
            "TOOLBOX_AMQP_PORT": str(self.amqp),
            "TOOLBOX_PG_PORT": str(self.pg),
            "TOOLBOX_RABBIT_NODE": "tbxtls%d@localhost" % os.getpid(),
            "TOOLBOX_TLS": "1",
            "TOOLBOX_TLS_CLIENT_CERT": "required",
            "TOOLBOX_PG_WORKER_PASSWORD": self.pg_worker_pw,
            "TOOLBOX_PG_OWNER_PASSWORD": self.pg_owner_pw,
            "TOOLBOX_RABBIT_TIMEOUT": "90",
        }
        # What a later run needs to stop this instance if this one is killed.
        with open(os.path.join(self.dir, "owner.json"), "w") as f:
            json.dump({"pid": os.getpid(), "env": {k: v for k, v in self.env.items() if "PASSWORD" not in k}}, f)
        self.tls = os.path.join(self.dir, "tls")

    def secrets(self):
        return [self.rabbit_pw, self.pg_worker_pw, self.pg_owner_pw]

    def services(self, *args, timeout=180, check=True):
        """services.sh on this instance. Its output goes to a file, not a pipe: were this test killed,
        a `start` under way still finishes (a later run's reaper then stops it) instead of dying of SIGPIPE
        half-way, with a server starting behind it."""
        env = clean_env()
        env.update(self.env)
        with tempfile.TemporaryFile("w+") as out:
            p = subprocess.run(["bash", SERVICES] + list(args), env=env, stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, timeout=timeout)
            out.seek(0)
            p.stdout, p.stderr = out.read(), ""
        if check and p.returncode != 0:
            raise AssertionError("services.sh %s exited %d:\n%s%s" % (" ".join(args), p.returncode, p.stdout,
                                                                    p.stderr))
        return p


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_ports():
    """AMQP port A (amqps A-1, management A+1, Erlang distribution A+10000, rabbitmqctl A+10001..A+10010,
    epmd A+10011) and a PostgreSQL port, all free; chosen away from the shared services' ports (35xxx, 45xxx)."""
    rng = random.Random()
    for _ in range(200):
        a = rng.randrange(22000, 25000)
        pg = rng.randrange(25000, 30000)
        ports = [a - 1, a, a + 1, pg] + list(range(a + 10000, a + 10012))
        if all(port_free(p) for p in ports):
            return a, pg
    raise AssertionError("no free ports found for the private services")


def clean_env():
    """The environment without any TOOLBOX_* setting of the caller (the test's own config file rules)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TOOLBOX_") and not k.startswith("PG")}


def pid_alive(pid):
    """Alive and not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_programs_using(d):
    """SIGKILL the toolbox programs (a worker and its pool) started with a configuration file in d: the
    worker's session recorded in worker.pid, and any program whose command line still names d."""
    try:
        with open(os.path.join(d, "worker.pid")) as f:
            wpid = int(f.read())
        if os.path.basename(os.readlink("/proc/%d/exe" % wpid)) == "msg-worker":
            os.killpg(wpid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) in (b"msg-worker", b"toolbox") and \
                any(a.startswith(d.encode() + b"/") for a in argv[1:]):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def reap_stale_instances():
    """Stop and remove the instances of earlier runs that were killed before their cleanup."""
    for owner in glob.glob(os.path.join("/tmp", DIR_PREFIX + "*", "owner.json")):
        d = os.path.dirname(owner)
        if os.path.exists(os.path.join(d, "stopped")):
            continue
        try:
            with open(owner) as f:
                info = json.load(f)
        except (OSError, ValueError):
            continue
        if pid_alive(info.get("pid", 0)):
            continue
        kill_programs_using(d)
        env = clean_env()
        env.update(info.get("env", {}))
        env["TOOLBOX_SERVICES_DIR"] = d
        # `stop` waits for a `start` still under way (the script's lock), then stops what it started.
        subprocess.run(["bash", SERVICES, "stop"], env=env, capture_output=True, timeout=400)
        shutil.rmtree(d, ignore_errors=True)


def run(args, cfg, timeout=60, extra=()):
    """toolbox/msg-worker with the configuration file cfg; returns the CompletedProcess (text)."""
    return subprocess.run([args[0], "--config", cfg] + list(extra) + list(args[1:]), env=clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def yaml_quote(s):
    return "'" + s.replace("'", "''") + "'"


def write_config(path, values):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        for k, v in values.items():
            f.write("%s: %s\n" % (k, yaml_quote(v) if isinstance(v, str) else json.dumps(v)))


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_foreign_ca(d):
    """A CA nobody trusts, and a client certificate it signed."""
    os.makedirs(d, exist_ok=True)
    openssl("req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=foreign CA",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=intruder", "-keyout", "client.key",
            "-out", "client.csr", cwd=d)
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "7", "-days",
            "2", "-out", "client.crt", cwd=d)
    os.chmod(os.path.join(d, "client.key"), 0o600)


# ------------------------------------------------------------------------------------------- the module

I = None          # the Instance
CFG = None        # the toolbox configuration file (amqps, verify-full, client certificates)
CFG_VALUES = {}
FOREIGN = None    # the foreign CA's folder
WORKER_PROC = None
WORKER_LOG = None
OUTPUTS = []      # (what, text) of everything our programs printed, checked for secrets at the end


def record(what, p):
    OUTPUTS.append((what, p.stdout + p.stderr))
    return p


def stop_worker():
    global WORKER_PROC
    p, WORKER_PROC = WORKER_PROC, None
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(p.pid, signal.SIGKILL)  # its own session: the pool processes too
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def cleanup_instance():
    """Idempotent: a module cleanup, and the last word of __main__ (SIGTERM, Ctrl-C)."""
    global I
    stop_worker()
    if I is None:
        return
    inst, I = I, None
    p = inst.services("stop", check=False, timeout=120)
    if p.returncode != 0:
        print("services.sh stop exited %d:\n%s%s" % (p.returncode, p.stdout, p.stderr), file=sys.stderr)
    else:
        open(os.path.join(inst.dir, "stopped"), "w").close()  # a kept folder is not reaped later
    if KEEP:
        print("TLS_KEEP=1: the instance's folder is %s" % inst.dir, file=sys.stderr)
    else:
        shutil.rmtree(inst.dir, ignore_errors=True)


def setUpModule():
    global I, CFG, FOREIGN, WORKER_PROC, WORKER_LOG
    if os.geteuid() != 0:
        skip("needs root (scripts/services.sh runs RabbitMQ and PostgreSQL)")
    for path in ("/usr/lib/rabbitmq/bin/rabbitmq-server", os.path.join(PG_BINDIR, "pg_ctl")):
        if not os.access(path, os.X_OK):
            skip("%s is missing" % path)
    if not shutil.which("openssl"):
        skip("openssl is missing")
    try:
        import celery  # noqa: F401
        import kombu  # noqa: F401
        import psycopg2  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as e:
        skip("python module missing: %s" % e)
    for prog in (TOOLBOX, WORKER):
        if not os.access(prog, os.X_OK):
            raise AssertionError("%s is not built (TOOLBOX_BIN_DIR=%s)" % (prog, BIN_DIR))

    reap_stale_instances()
    I = Instance()
    unittest.addModuleCleanup(cleanup_instance)
    t0 = time.monotonic()
    I.services("start")
    print("private TLS services up in %.1f s (amqp %d, amqps %d, postgres %d, %s)"
          % (time.monotonic() - t0, I.amqp, I.amqps, I.pg, I.dir), file=sys.stderr)
    I.services("rabbitmqctl", "add_user", I.rabbit_user, I.rabbit_pw)
    I.services("rabbitmqctl", "set_permissions", "-p", "/", I.rabbit_user, ".*", ".*", ".*")

    # The settings `services.sh env --tls` prints, with our RabbitMQ user instead of guest.
    tls_env = {}
    for line in I.services("env", "--tls").stdout.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            tls_env[k] = v[1:-1] if v.startswith("'") else v  # our values hold no quotes
    broker = tls_env["TOOLBOX_BROKER_URL"]
    assert broker == "amqps://guest:guest@127.0.0.1:%d//" % I.amqps, broker
    CFG_VALUES.update({
        "broker_url": "amqps://%s:%s@127.0.0.1:%d//" % (I.rabbit_user, I.rabbit_pw, I.amqps),
        "broker_ssl_ca_file": tls_env["TOOLBOX_BROKER_SSL_CA_FILE"],
        "broker_ssl_cert_file": tls_env["TOOLBOX_BROKER_SSL_CERT_FILE"],
        "broker_ssl_key_file": tls_env["TOOLBOX_BROKER_SSL_KEY_FILE"],
        "result_backend": tls_env["TOOLBOX_RESULT_BACKEND"],
        "database_admin_url": tls_env["TOOLBOX_DATABASE_ADMIN_URL"],
        "queues": ["msg", "export"],
        "log.level": "debug",
    })
    for k in ("result_backend", "database_admin_url"):
        assert "sslmode=verify-full" in CFG_VALUES[k], CFG_VALUES[k]
        assert I.pg_worker_pw in CFG_VALUES[k] or I.pg_owner_pw in CFG_VALUES[k]
    CFG = os.path.join(I.dir, "toolbox.yaml")
    write_config(CFG, CFG_VALUES)
    FOREIGN = os.path.join(I.dir, "foreign")
    make_foreign_ca(FOREIGN)

    p = record("setup", run([TOOLBOX, "setup"], CFG))
    assert p.returncode == 0, "toolbox setup over TLS failed:\n" + p.stdout + p.stderr

    WORKER_LOG = os.path.join(I.dir, "msg-worker.log")
    with open(WORKER_LOG, "w") as log:
        WORKER_PROC = subprocess.Popen([WORKER, "--config", CFG, "--concurrency", "2"], env=clean_env(),
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    with open(os.path.join(I.dir, "worker.pid"), "w") as f:
        f.write(str(WORKER_PROC.pid))


def tearDownModule():
    pass  # cleanup_instance runs as a module cleanup, also when setUpModule failed half-way


def config_with(path, **changes):
    values = dict(CFG_VALUES)
    values.update(changes)
    write_config(path, values)
    return path


def one_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    return len(lines) == 1


class TLS(unittest.TestCase):
    maxDiff = None

    # ---- positive: everything over TLS

    def test_01_send_over_tls(self):
        p = record("send", run([TOOLBOX, "send", "msg.add", "--args", "[2,3]", "--wait", "--timeout", "45"], CFG))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        result = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(result["status"], "SUCCESS", result)
        self.assertEqual(result["result"], 5)

    def test_02_worker_connections_are_tls(self):
        # After test_01 the worker is consuming: every connection of our user is TLS, with our client cert.
        p = I.services("rabbitmqctl", "list_connections", "user", "ssl", "peer_cert_subject", "name", "--silent")
        rows = [l.split("\t") for l in p.stdout.splitlines() if l.startswith(I.rabbit_user + "\t")]
        self.assertTrue(rows, "no connection of %s:\n%s" % (I.rabbit_user, p.stdout))
        for row in rows:
            self.assertEqual(row[1], "true", row)
            self.assertIn("CN=toolbox-client", row[2], row)
        sql = ("SELECT a.usename, s.ssl, s.version, coalesce(s.client_dn, '') FROM pg_stat_activity a "
               "JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'cadasta' AND a.pid <> pg_backend_pid()")
        q = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-F", "|",
                            "-h", os.path.join(I.dir, "postgres", "run"), "-p", str(I.pg), "-U", "postgres",
                            "-d", "postgres", "-c", sql], capture_output=True, text=True, timeout=30, cwd="/")
        self.assertEqual(q.returncode, 0, q.stderr)
        rows = [l.split("|") for l in q.stdout.splitlines() if l]
        self.assertTrue(any(r[0] == "worker" for r in rows), "the worker has no database session:\n" + q.stdout)
        for r in rows:
            self.assertEqual(r[1], "t", r)
            self.assertIn("CN=toolbox-client", r[3], r)

    def test_03_python_celery_client_over_tls(self):
        from celery import Celery
        from kombu import Exchange, Queue
        tls = CFG_VALUES
        exchange = Exchange("task_exchange", "topic")
        app = Celery("tls", broker=tls["broker_url"], backend="db+" + tls["result_backend"])
        app.conf.update(
            broker_use_ssl={"ca_certs": tls["broker_ssl_ca_file"], "cert_reqs": ssl.CERT_REQUIRED,
                            "certfile": tls["broker_ssl_cert_file"], "keyfile": tls["broker_ssl_key_file"],
                            "server_hostname": "127.0.0.1"},
            task_default_exchange="task_exchange", task_default_exchange_type="topic",
            task_queues=[Queue("msg", exchange, routing_key="msg")],
            task_routes=lambda name, *a, **kw: {"routing_key": name.split(".")[0], "exchange": exchange},
            broker_connection_max_retries=2, result_expires=None,
        )
        try:
            r = app.send_task("msg.add", args=[2, 3])
            self.assertEqual(r.get(timeout=45), 5)
        finally:
            app.close()

    def test_04_inspect_and_ping_over_tls(self):
        p = record("inspect", run([TOOLBOX, "inspect"], CFG))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("msg", p.stdout)
        p = record("ping", run([TOOLBOX, "ping", "--timeout", "3", "--limit", "1"], CFG))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("pong", p.stdout.lower())

    # ---- refused

    def test_10_toolbox_refuses_a_server_it_does_not_trust(self):
        # The client does not trust the broker's CA: the handshake fails on our side.
        cfg = config_with(os.path.join(I.dir, "foreign-ca.yaml"),
                          broker_ssl_ca_file=os.path.join(FOREIGN, "ca.crt"))
        p = record("send, foreign CA", run([TOOLBOX, "send", "msg.add", "--args", "[1,1]"], cfg))
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertTrue(one_line(p.stderr), p.stderr)
        self.assertIn("certificate is not trusted", p.stderr)
        # broker_ssl_verify=false would connect (insecure, documented): the refusal above is verification's.
        p = record("inspect, no verify", run([TOOLBOX, "inspect"], cfg, extra=["--set", "broker_ssl_verify=false"]))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_11_broker_refuses_a_client_without_a_valid_certificate(self):
        # TOOLBOX_TLS_CLIENT_CERT=required: no certificate, or one from a foreign CA, is refused by RabbitMQ.
        for what, cert, key in (("no client certificate", "", ""),
                                ("foreign client certificate", os.path.join(FOREIGN, "client.crt"),
                                 os.path.join(FOREIGN, "client.key"))):
            cfg = config_with(os.path.join(I.dir, "client-cert.yaml"), broker_ssl_cert_file=cert,
                              broker_ssl_key_file=key)
            p = record("send, " + what, run([TOOLBOX, "send", "msg.add", "--args", "[1,1]"], cfg))
            self.assertNotEqual(p.returncode, 0, what + ": " + p.stdout)
            self.assertTrue(one_line(p.stderr), p.stderr)
            self.assertIn("cannot log in to amqps://", p.stderr)
            self.assertIn("TLS", p.stderr)

    def test_12_plain_amqp_to_the_tls_port_fails(self):
        cfg = config_with(os.path.join(I.dir, "plain.yaml"),
                          broker_url="amqp://%s:%s@127.0.0.1:%d//" % (I.rabbit_user, I.rabbit_pw, I.amqps),
                          broker_connect_timeout=5)
        p = record("send, plain to amqps port", run([TOOLBOX, "send", "msg.add", "--args", "[1,1]"], cfg))
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertTrue(one_line(p.stderr), p.stderr)

    def test_13_python_client_refuses_a_server_it_does_not_trust(self):
        from kombu import Connection
        conn = Connection(CFG_VALUES["broker_url"], connect_timeout=10,
                          ssl={"ca_certs": os.path.join(FOREIGN, "ca.crt"), "cert_reqs": ssl.CERT_REQUIRED,
                               "certfile": CFG_VALUES["broker_ssl_cert_file"],
                               "keyfile": CFG_VALUES["broker_ssl_key_file"], "server_hostname": "127.0.0.1"})
        try:
            with self.assertRaises(ssl.SSLError) as cm:
                conn.connect()
            self.assertIn("CERTIFICATE_VERIFY_FAILED", str(cm.exception))
        finally:
            conn.release()

    def test_14_postgres_with_a_foreign_root_certificate_is_refused(self):
        ours = os.path.join(I.tls, "ca.crt")
        foreign = os.path.join(FOREIGN, "ca.crt")
        rb = CFG_VALUES["result_backend"]
        self.assertIn("sslrootcert=" + ours, rb)
        cfg = config_with(os.path.join(I.dir, "pg-foreign.yaml"), result_backend=rb.replace(ours, foreign))
        p = record("result, foreign root cert", run([TOOLBOX, "result", "00000000-0000-4000-8000-000000000000"], cfg))
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertTrue(one_line(p.stderr), p.stderr)
        self.assertIn("certificate verify failed", p.stderr)
        self.assertIn("worker:****@", p.stderr)
        # The same URL with our CA reaches the server (the task is unknown: PENDING, as Celery says).
        p = record("result, our root cert", run([TOOLBOX, "result", "00000000-0000-4000-8000-000000000000"], CFG))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_15_toolbox_refuses_a_certificate_for_another_host(self):
        # A server whose certificate our CA signed, but for other.example: trusted chain, wrong name.
        d = os.path.join(I.dir, "otherhost")
        os.makedirs(d)
        with open(os.path.join(d, "ext"), "w") as f:
            f.write("subjectAltName = DNS:other.example\nextendedKeyUsage = serverAuth\n")
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=other.example", "-keyout", "srv.key",
                "-out", "srv.csr", cwd=d)
        openssl("x509", "-req", "-in", "srv.csr", "-CA", os.path.join(I.tls, "ca.crt"), "-CAkey",
                os.path.join(I.tls, "ca.key"), "-set_serial", "9", "-days", "2", "-extfile", "ext", "-out", "srv.crt",
                cwd=d)
        port = next(p for p in range(I.amqp + 5, I.amqp + 200) if port_free(p))
        srv = subprocess.Popen(["openssl", "s_server", "-quiet", "-accept", "127.0.0.1:%d" % port, "-cert", "srv.crt",
                                "-key", "srv.key"], cwd=d, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while port_free(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            for host in ("127.0.0.1", "localhost"):
                cfg = config_with(os.path.join(I.dir, "otherhost.yaml"), broker_url="amqps://%s:%s@%s:%d//" % (
                    I.rabbit_user, I.rabbit_pw, host, port))
                p = record("inspect, certificate for another host", run([TOOLBOX, "inspect"], cfg))
                self.assertNotEqual(p.returncode, 0, p.stdout)
                self.assertTrue(one_line(p.stderr), p.stderr)
                self.assertIn("certificate is not for host " + host, p.stderr)
        finally:
            srv.kill()
            srv.wait()

    # ---- secrets (last: it reads what the others recorded)

    def test_99_no_secret_in_config_show_logs_errors_or_titles(self):
        p = record("config show", run([TOOLBOX, "config", "show"], CFG))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("amqps://%s:****@" % I.rabbit_user, p.stdout)
        self.assertIn("worker:****@", p.stdout)
        self.assertIn("toolbox:****@", p.stdout)
        self.assertIn("broker_ssl_ca_file", p.stdout)
        # Process titles of the worker and its pool processes.
        self.assertIsNotNone(WORKER_PROC)
        if WORKER_PROC.poll() is not None:
            with open(WORKER_LOG) as f:
                self.fail("msg-worker exited:\n" + f.read())
        pids = [WORKER_PROC.pid]
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == WORKER_PROC.pid:
                            pids.append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
        for pid in pids:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                OUTPUTS.append(("process title of %d" % pid, f.read().replace(b"\0", b" ").decode(errors="replace")))
            with open("/proc/%d/comm" % pid) as f:
                OUTPUTS.append(("thread name of %d" % pid, f.read()))
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True)
        OUTPUTS.append(("ps", ps.stdout))
        stop_worker()  # flush and close its log
        with open(WORKER_LOG) as f:
            log = f.read()
        self.assertIn("DEBUG", log.upper())
        OUTPUTS.append(("msg-worker log", log))
        self.assertGreater(len(OUTPUTS), 10)
        for what, text in OUTPUTS:
            for s in I.secrets():
                self.assertNotIn(s, text, "a password shows in %s:\n%s" % (what, text))


def interrupted(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupted)
    try:
        unittest.main(warnings="ignore")  # kombu 5.2 on Python 3.11 warns about entry_points(); not ours
    finally:
        cleanup_instance()
