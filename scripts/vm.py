# SPDX-License-Identifier: GPL-2.0
"""QEMU guest control for vballoon tests (python3 standard library only).

    from vm import VM
    with VM(K61, 'vballoon') as vm:
        vm.sh('vb-load')
        vm.balloon(1 << 30)
        vm.wait_balloon(1 << 30)

Two QEMUs: '7.2' is the system's (or $QEMU), '10.0' the private copy that
scripts/deps.sh unpacks under $VB_CACHE/qemu-10.0.  VM(..., qemu='10.0')
picks one; the default is $VB_QEMU, else '7.2'.

The guest runs the busybox initramfs of scripts/mkinitramfs.sh.  The kernel
console goes to a file (ttyS0); a shell on a second serial port (ttyS1, or a
virtio console on microvm) is driven through a unix socket; QMP through
another.  QEMU is always killed and the temporary directory removed by
close() (also on exceptions, via the context manager, and if this process
dies, through PR_SET_PDEATHSIG).
"""

import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VB_CACHE = os.environ.get('VB_CACHE', '/var/cache/vballoon')
QEMU = os.environ.get('QEMU', 'qemu-system-x86_64')
QEMU_VERSIONS = ('7.2', '10.0')
# QEMU 10.0 from bookworm-backports, unpacked (never installed) by deps.sh.
QEMU10_DIR = os.environ.get('VB_QEMU10_DIR',
                            os.path.join(VB_CACHE, 'qemu-10.0'))

MiB = 1 << 20
GiB = 1 << 30

TRANSPORTS = ('pci-modern', 'pci-legacy', 'pci-packed', 'mmio')

# Console lines that fail a test.  The last pattern is matched case-blind.
BAD_CONSOLE = [
    re.compile(p) for p in (
        r'\bBUG\b', r'WARNING', r'Oops', r'general protection',
        r'refcount', r'list_add corruption', r'list_del corruption',
        r'Kernel panic', r'Call Trace', r'soft lockup',
        r'blocked for more than', r'rcu.*stall', r'UBSAN', r'bad page',
        r'Bad page', r'page dumped because',
        # The debug kernel's checkers (most also print BUG or WARNING).
        r'KASAN:', r'KFENCE:', r'suspected memory leak', r'ODEBUG:',
        r'DEBUG_LOCKS_WARN_ON', r'turning off the locking correctness',
        r'possible circular locking', r'inconsistent lock state',
        r'sleeping function called from invalid context', r'VM_BUG_ON',
        r'list corruption', r'kernel BUG at',
    )
] + [re.compile(r'vballoon.*(error|fail)', re.I)]

# Known-harmless lines: the kernel's own notice that an unsigned
# out-of-tree module was loaded.  Nothing from vballoon's own code.
BENIGN_CONSOLE = [
    re.compile(p) for p in (
        r'module verification failed: signature and/or required key '
        r'missing - tainting kernel',
        r'loading out-of-tree module taints kernel',
    )
]


def load_kernels_env():
    """Return {'K61': ..., 'K612': ...} from $VB_CACHE/kernels.env."""
    env = {}
    with open(os.path.join(VB_CACHE, 'kernels.env')) as f:
        for line in f:
            line = line.strip()
            if '=' in line and not line.startswith('#'):
                k, v = line.split('=', 1)
                env[k] = v.strip('"\'')
    return env


def host_meminfo():
    """The host's /proc/meminfo as {name: value in kB (or pages)}."""
    d = {}
    with open('/proc/meminfo') as f:
        for line in f:
            k, v = line.split(':', 1)
            d[k] = int(v.split()[0])
    return d


def host_tsc_khz():
    """The host's TSC rate in kHz (from /proc/cpuinfo), 2 GHz if unknown."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('cpu MHz'):
                    return int(float(line.split(':')[1]) * 1000)
    except (OSError, ValueError):
        pass
    return 2000000


class VMError(Exception):
    pass


def default_qemu():
    """The QEMU version a VM uses unless told: $VB_QEMU, else '7.2'."""
    return os.environ.get('VB_QEMU') or '7.2'


def qemu_setup(version):
    """(binary, environment or None, extra args) that run QEMU `version`.

    10.0 is the private copy: it must load its own modules
    (QEMU_MODULE_DIR; with 7.2's it aborts) and its own firmware and
    option ROMs (-L), with SeaBIOS from the system as a fallback."""
    if version == '7.2':
        return QEMU, None, []
    if version == '10.0':
        binary = os.path.join(QEMU10_DIR, 'usr', 'bin', 'qemu-system-x86_64')
        if not os.access(binary, os.X_OK):
            raise VMError('no QEMU 10.0 at %s (scripts/deps.sh unpacks it)'
                          % binary)
        env = dict(os.environ)
        env['QEMU_MODULE_DIR'] = os.path.join(
            QEMU10_DIR, 'usr', 'lib', 'x86_64-linux-gnu', 'qemu')
        return binary, env, ['-L', os.path.join(QEMU10_DIR, 'usr', 'share',
                                                'qemu'),
                             '-L', '/usr/share/seabios']
    raise ValueError('qemu must be one of %s, got %r' % (QEMU_VERSIONS,
                                                         version))


def qemu_microvm_bios(version):
    """-bios arguments for -M microvm on QEMU `version`.

    Debian's QEMU 7.2 finds qboot as /usr/share/qemu/bios-microvm.bin.  The
    10.0 data package has qboot.rom but no bios-microvm.bin, so 10.0 would
    take SeaBIOS's microvm build from /usr/share/seabios; with that, a 6.1
    guest hangs parsing the ACPI tables right after "ACPI: Core revision"
    (a table with a garbage name and a bad checksum; 6.12 boots).  Use
    qboot, as upstream QEMU and 7.2 do."""
    if version == '10.0':
        return ['-bios', os.path.join(QEMU10_DIR, 'usr', 'share', 'qemu',
                                      'qboot.rom')]
    return []


_version_cache = {}


def qemu_version_line(version):
    """`qemu-system-x86_64 --version`'s first line for QEMU `version`."""
    if version not in _version_cache:
        binary, env, _ = qemu_setup(version)
        try:
            p = subprocess.run([binary, '--version'], env=env,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True,
                               timeout=30)
            _version_cache[version] = (p.stdout.splitlines() or ['?'])[0]
        except (OSError, subprocess.TimeoutExpired) as e:
            _version_cache[version] = 'unknown (%s)' % e
    return _version_cache[version]


class VMTimeout(VMError):
    pass


class QMPError(VMError):
    pass


def _pdeathsig():
    """In the child: die with SIGKILL when the parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    os.setpgrp()


def _term_to_exit(signum, frame):
    raise SystemExit(128 + signum)


def _install_term_handler():
    """Turn SIGTERM/SIGHUP into SystemExit (if nobody handles them yet),
    so that `with VM(...)` blocks and finally clauses still kill QEMU and
    remove the temporary directory when a run is stopped by timeout(1)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _term_to_exit)
        except (ValueError, OSError):
            pass


def build_initrd(kernel_ver, driver, out, extra_modules=()):
    """Run scripts/mkinitramfs.sh; raise VMError with its output on failure."""
    cmd = [os.path.join(ROOT, 'scripts', 'mkinitramfs.sh'), kernel_ver,
           driver, out] + list(extra_modules)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if p.returncode != 0:
        raise VMError('mkinitramfs failed: ' + p.stdout.strip())
    return out


class VM:
    """One QEMU guest.  See the module docstring."""

    _seq = 0

    def __init__(self, kernel_ver, driver='vballoon', mem='2G', smp=2,
                 machine='pc', balloon_opts='', transport='pci-modern',
                 extra_qemu_args=(), append='', initrd=None,
                 extra_modules=(), load_driver=False, balloon=True,
                 boot_timeout=180, log_dir=None, name=None, disks=(),
                 qemu=None):
        if transport not in TRANSPORTS:
            raise ValueError('transport must be one of %s' % (TRANSPORTS,))
        self.qemu = qemu or default_qemu()
        self._qemu_bin, self._qemu_env, self._qemu_l = qemu_setup(self.qemu)
        if transport == 'mmio':
            machine = 'microvm'
        if machine == 'microvm' and transport != 'mmio':
            transport = 'mmio'
        self.kernel_ver = kernel_ver
        self.driver = driver
        self.mem = mem
        self.mem_bytes = self._parse_size(mem)
        self.smp = smp
        self.machine = machine
        self.transport = transport
        self.balloon_opts = balloon_opts
        self.log_dir = log_dir
        self.disks = list(disks)
        VM._seq += 1
        self.name = name or 'vm%d-q%s' % (VM._seq, self.qemu)
        self.proc = None
        self._sh_sock = None
        self._qmp_sock = None
        self._qmp_file = None
        self._buf = b''
        self._buf_cv = threading.Condition()
        self._reader = None
        self._reader_stop = False
        self._cmd_id = 0
        self._qmp_lock = threading.Lock()
        self.qmp_events = []
        self.boot_time = None
        # (console, QEMU log) of the QEMUs this guest migrated away from.
        self._done_logs = []
        self._gen = 0       # migrations so far (migrate())
        _install_term_handler()
        self.tmp = tempfile.mkdtemp(prefix='vb-vm.')
        try:
            self.console_path = os.path.join(self.tmp, 'console.log')
            self.qemu_log_path = os.path.join(self.tmp, 'qemu.log')
            if initrd is None:
                initrd = build_initrd(kernel_ver, driver,
                                      os.path.join(self.tmp, 'initrd.gz'),
                                      extra_modules)
            self.initrd = initrd
            self._start(extra_qemu_args, append, load_driver, balloon)
            self._wait_shell(boot_timeout)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------
    @staticmethod
    def _parse_size(s):
        if isinstance(s, int):
            return s
        m = re.fullmatch(r'(\d+)([KMGT]?)', str(s).strip().upper())
        if not m:
            raise ValueError('bad size %r' % s)
        mult = {'': MiB, 'K': 1 << 10, 'M': MiB, 'G': GiB, 'T': 1 << 40}
        return int(m.group(1)) * mult[m.group(2)]

    def balloon_iothreads(self):
        """iothread ids that balloon_opts names (iothread=ID): each needs
        its -object iothread, which _start adds."""
        return re.findall(r'(?:^|,)iothread=([^,]+)', self.balloon_opts)

    def balloon_device(self):
        """The -device argument for the balloon: the transport's options,
        then balloon_opts (e.g. 'free-page-hint=on,iothread=io0')."""
        if self.transport == 'mmio':
            dev = 'virtio-balloon-device,id=balloon0'
        else:
            dev = 'virtio-balloon-pci,id=balloon0'
            if self.transport == 'pci-legacy':
                dev += ',disable-modern=on'
            elif self.transport == 'pci-packed':
                dev += ',disable-legacy=on,packed=on'
            else:
                dev += ',disable-legacy=on'
        if self.balloon_opts:
            dev += ',' + self.balloon_opts.lstrip(',')
        return dev

    def _start(self, extra_qemu_args, append, load_driver, balloon):
        kdir = os.path.join(VB_CACHE, 'kernel', self.kernel_ver)
        kernel = os.path.join(kdir, 'boot', 'vmlinuz-' + self.kernel_ver)
        if not os.path.exists(kernel):
            raise VMError('no guest kernel %s' % kernel)
        sh_path = os.path.join(self.tmp, 'sh.sock')
        qmp_path = os.path.join(self.tmp, 'qmp.sock')

        # We listen, QEMU connects: no start-up race on the shell socket.
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(sh_path)
        lsock.listen(1)

        # tsc=unstable: TCG guests otherwise may mark sched_clock stable
        # (6.12) and flip its static key at run time; with multi-threaded
        # TCG the int3 text patching of that flip can race with the other
        # vCPU and oops in sched_clock_cpu.  Seen once in ~20 boots.
        cmdline = ['console=ttyS0', 'panic=-1', 'printk.devkmsg=on',
                   'tsc=unstable']
        if self.machine == 'microvm':
            # No HPET/PM timer on microvm: when PIT calibration fails under
            # host load the boot hangs; tell the kernel the TSC rate (TCG's
            # guest TSC is the host's).
            cmdline += ['vb.tty=hvc0', 'tsc_early_khz=%d' % host_tsc_khz()]
        # A kernel may ask for its own arguments (the debug kernel does:
        # scripts/debug-kernel.sh writes them).
        extra = os.path.join(VB_CACHE, 'kernel', self.kernel_ver, 'cmdline')
        if os.path.exists(extra):
            with open(extra) as f:
                own = f.read().split()
            if self.machine == 'microvm':
                # acpi=noirq is for the PC's PCI interrupt routing; microvm
                # has no PCI, and its virtio-mmio interrupts (GSI 16 and
                # up) need the IOAPIC that ACPI describes (with it the
                # kernel routes through the PIC: "IRQ index 0 not found").
                own = [a for a in own if a != 'acpi=noirq']
            cmdline += own
        if load_driver:
            cmdline.append('vb.load=1')
        if append:
            cmdline.append(append)
        args = [self._qemu_bin] + self._qemu_l + [
                '-accel', 'tcg,thread=multi',
                '-m', self.mem, '-smp', str(self.smp),
                '-nographic', '-no-reboot', '-monitor', 'none',
                '-kernel', kernel, '-initrd', self.initrd,
                '-append', ' '.join(c for c in cmdline if c),
                '-chardev', 'socket,id=vbsh,path=' + sh_path,
                '-qmp', 'unix:%s,server=on,wait=off' % qmp_path]
        if self.machine == 'microvm':
            # microvm has a single ISA serial port; ACPI (default on) is how
            # the guest finds virtio-mmio devices, since Debian kernels lack
            # VIRTIO_MMIO_CMDLINE_DEVICES.
            args += qemu_microvm_bios(self.qemu)
            args += ['-M', 'microvm',
                     '-serial', 'file:' + self.console_path,
                     '-device', 'virtio-serial-device',
                     '-device', 'virtconsole,chardev=vbsh']
        else:
            args += ['-M', self.machine,
                     '-serial', 'file:' + self.console_path,
                     '-serial', 'chardev:vbsh']
        if balloon:
            for io in self.balloon_iothreads():
                args += ['-object', 'iothread,id=' + io]
            args += ['-device', self.balloon_device()]
        for d in self.disks:
            # Guest sees /dev/vda, /dev/vdb, ... (needs virtio_blk).
            args += ['-drive', 'file=%s,if=virtio,format=raw,cache=unsafe'
                     % d]
        args += list(extra_qemu_args)
        self.qemu_args = args
        self._paths = {'sh': sh_path, 'qmp': qmp_path,
                       'console': self.console_path}
        self._t0 = time.monotonic()
        self._launch(args, lsock)

    def _launch(self, args, lsock):
        """Start QEMU with args, logging to qemu_log_path; take its shell
        connection on lsock (closed here) and connect to its QMP socket."""
        self._qemu_log = open(self.qemu_log_path, 'wb')
        # The log says which QEMU ran and how.
        self._qemu_log.write(('# QEMU %s: %s\n# %s\n' % (
            self.qemu, qemu_version_line(self.qemu),
            ' '.join(args))).encode())
        self._qemu_log.flush()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     env=self._qemu_env,
                                     stdout=self._qemu_log,
                                     stderr=subprocess.STDOUT,
                                     preexec_fn=_pdeathsig)
        try:
            lsock.settimeout(0.5)
            deadline = time.monotonic() + 30
            while True:
                try:
                    conn, _ = lsock.accept()
                    break
                except socket.timeout:
                    self._check_alive()
                    if time.monotonic() > deadline:
                        raise VMTimeout('QEMU did not connect the shell '
                                        'socket')
        finally:
            lsock.close()
        conn.settimeout(None)
        self._sh_sock = conn
        self._reader_stop = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self._qmp_connect(self._paths['qmp'])

    # ------------------------------------------------------------------
    # live migration
    def migrate(self, timeout=900, bandwidth=4 * GiB):
        """Live-migrate the guest to a new QEMU started with the same
        command line plus -incoming on a Unix socket, at up to bandwidth
        bytes/s (QEMU 7.2 defaults to 32 MiB/s); from then on this object
        drives the destination (shell, QMP, RSS), and the source's
        console and QEMU log stay part of console_text() and the saved
        logs.  Returns the source's last query-migrate answer (status
        'completed'; ram: transferred, normal, duplicate, ...)."""
        self._gen += 1
        new = {k: '%s.%d' % (p, self._gen) for k, p in self._paths.items()}
        mig = os.path.join(self.tmp, 'mig.%d.sock' % self._gen)
        args = []
        for a in self.qemu_args:
            for k, p in self._paths.items():
                a = a.replace(p, new[k])
            args.append(a)
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(new['sh'])
        lsock.listen(1)

        src = (self.proc, self._sh_sock, self._qmp_sock, self._qmp_file,
               self._reader, self._qemu_log)
        self._done_logs.append((self.console_path, self.qemu_log_path))
        self.qmp('migrate-set-parameters', max_bandwidth=int(bandwidth))
        self._reader_stop = True
        src[4].join(2)
        self.console_path = new['console']
        self.qemu_log_path = '%s.%d' % (self.qemu_log_path, self._gen)
        self._paths = new
        src_qmp = (src[2], src[3])
        try:
            self._launch(args + ['-incoming', 'unix:' + mig], lsock)
        except BaseException:
            # No destination: stop it and the source alike (the test
            # fails either way); close() saves both halves' logs.
            dst = self.proc
            if dst is not src[0] and dst is not None and dst.poll() is None:
                dst.kill()
                dst.wait(10)
            for f in src[1:4] + (src[5],):
                try:
                    f.close()
                except OSError:
                    pass
            self.proc = src[0]
            self.close()
            raise
        self.qemu_args = args
        # The source's QMP, kept by hand for the migration itself.
        dst_qmp = (self._qmp_sock, self._qmp_file)
        dst_proc = self.proc
        self._qmp_sock, self._qmp_file = src_qmp
        self.proc = src[0]
        try:
            self.qmp('migrate', uri='unix:' + mig)
            deadline = time.monotonic() + timeout
            while True:
                info = self.qmp('query-migrate')
                if info.get('status') in ('completed', 'failed',
                                          'cancelled'):
                    break
                if time.monotonic() > deadline:
                    raise VMTimeout('migration not done after %ss: %s'
                                    % (timeout, info))
                time.sleep(0.5)
        finally:
            for f in src_qmp:
                try:
                    f.close()
                except OSError:
                    pass
            self._qmp_sock, self._qmp_file = dst_qmp
            src_proc, self.proc = self.proc, dst_proc
            try:
                src[1].close()
            except OSError:
                pass
            if src_proc.poll() is None:
                src_proc.terminate()
                src_proc.wait(10)
            src[5].close()
        if info.get('status') != 'completed':
            raise VMError('migration %s: %s' % (info.get('status'), info))
        deadline = time.monotonic() + 60
        while self.qmp('query-status').get('status') != 'running':
            if time.monotonic() > deadline:
                raise VMTimeout('destination not running 60 s after the '
                                'migration')
            time.sleep(0.2)
        self.sh('true', timeout=60)
        return info

    def _check_alive(self):
        if self.proc is None or self.proc.poll() is not None:
            rc = None if self.proc is None else self.proc.returncode
            raise VMError('QEMU exited (rc %s): %s | console tail: %s' % (
                rc, self._tail(self.qemu_log_path, 600),
                self._tail(self.console_path, 1200)))

    @staticmethod
    def _tail(path, n):
        try:
            with open(path, 'rb') as f:
                data = f.read()
            return data[-n:].decode('utf-8', 'replace').strip()
        except OSError:
            return ''

    def _read_loop(self):
        s = self._sh_sock
        while not self._reader_stop:
            try:
                r, _, _ = select.select([s], [], [], 0.5)
                if not r:
                    continue
                data = s.recv(65536)
            except (OSError, ValueError):
                data = b''
            with self._buf_cv:
                if not data:
                    self._reader_stop = True
                    self._buf_cv.notify_all()
                    return
                self._buf += data.replace(b'\r', b'')
                self._buf_cv.notify_all()

    # ------------------------------------------------------------------
    # guest shell
    def _send(self, text):
        self._sh_sock.sendall(text.encode())

    def sh(self, cmd, timeout=60, check=False):
        """Run cmd in the guest shell; return (rc, output)."""
        self._cmd_id += 1
        n = self._cmd_id
        tag = '%d_%d' % (os.getpid(), n)
        # The markers are split in the command text so that a terminal echo
        # of the command can never look like its output.
        self._send('echo "@@B""%s"; ( %s\n) 2>&1; echo "@@E""%s $?"\n'
                   % (tag, cmd, tag))
        pat = re.compile(rb'@@B' + tag.encode() + rb'\n(.*?)@@E' +
                         tag.encode() + rb' (\d+)\n', re.S)
        deadline = time.monotonic() + timeout
        with self._buf_cv:
            while True:
                m = pat.search(self._buf)
                if m:
                    self._buf = self._buf[m.end():]
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VMTimeout('guest command timed out after %ss: %s'
                                    % (timeout, cmd))
                if self._reader_stop:
                    self._check_alive()
                    raise VMError('guest shell connection closed')
                self._buf_cv.wait(min(left, 0.5))
                if self.proc.poll() is not None:
                    self._check_alive()
        rc = int(m.group(2))
        out = m.group(1).decode('utf-8', 'replace')
        if check and rc != 0:
            raise VMError('guest command failed (rc %d): %s: %s'
                          % (rc, cmd, out.strip()[-2000:]))
        return rc, out

    def sh_ok(self, cmd, timeout=60):
        """Run cmd, raise on non-zero status, return its output."""
        return self.sh(cmd, timeout, check=True)[1]

    def _wait_shell(self, timeout):
        """Wait for the guest shell's banner, then check it answers."""
        deadline = time.monotonic() + timeout
        with self._buf_cv:
            while b'@@VB-READY\n' not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VMTimeout('guest shell not up after %ss; console '
                                    'tail: %s' % (timeout, self._tail(
                                        self.console_path, 1500)))
                if self._reader_stop:
                    self._check_alive()
                    raise VMError('guest shell connection closed')
                self._buf_cv.wait(min(left, 0.5))
                self._check_alive()
            self._buf = self._buf[self._buf.index(b'@@VB-READY\n') + 11:]
        self.boot_time = time.monotonic() - self._t0
        self.sh('true', timeout=30)

    # ------------------------------------------------------------------
    # QMP
    def _qmp_connect(self, path):
        deadline = time.monotonic() + 30
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                break
            except OSError:
                s.close()
                self._check_alive()
                if time.monotonic() > deadline:
                    raise VMTimeout('cannot connect to QMP')
                time.sleep(0.1)
        s.settimeout(60)
        self._qmp_sock = s
        self._qmp_file = s.makefile('rb')
        greeting = self._qmp_read()
        if 'QMP' not in greeting:
            raise QMPError('bad QMP greeting %r' % greeting)
        self.qmp('qmp_capabilities')

    def _qmp_read(self):
        line = self._qmp_file.readline()
        if not line:
            self._check_alive()
            raise QMPError('QMP connection closed')
        return json.loads(line)

    def qmp(self, cmd, **args):
        """Run a QMP command; return its 'return' value or raise QMPError."""
        with self._qmp_lock:
            msg = {'execute': cmd}
            if args:
                msg['arguments'] = {k.replace('_', '-'): v
                                    for k, v in args.items()}
            self._qmp_sock.sendall(json.dumps(msg).encode() + b'\n')
            while True:
                r = self._qmp_read()
                if 'event' in r:
                    self.qmp_events.append(r)
                    continue
                if 'error' in r:
                    raise QMPError('%s: %s' % (cmd, r['error']))
                return r.get('return')

    def hmp(self, cmd):
        """Human monitor command through QMP; returns its text."""
        return self.qmp('human-monitor-command', command_line=cmd)

    # ------------------------------------------------------------------
    # balloon
    def balloon(self, value):
        """Set the guest size target to value bytes."""
        self.qmp('balloon', value=int(value))

    def query_balloon(self):
        """Guest memory size as QEMU sees it (RAM - balloon), in bytes."""
        return int(self.qmp('query-balloon')['actual'])

    def expected_actual(self, target):
        """What query-balloon reports once the driver met target."""
        pages = max(0, self.mem_bytes - int(target)) >> 12
        return self.mem_bytes - (pages << 12)

    def wait_balloon(self, target, timeout=120, interval=0.1):
        """Wait until query-balloon equals target (rounded to what QEMU can
        reach); return seconds waited.  Raise VMTimeout with the last value
        otherwise."""
        want = self.expected_actual(target)
        t0 = time.monotonic()
        while True:
            cur = self.query_balloon()
            if cur == want:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise VMTimeout('query-balloon %d (%d MiB), expected %d '
                                '(%d MiB) after %ds' % (
                                    cur, cur // MiB, want, want // MiB,
                                    timeout))
            time.sleep(interval)

    def wait_balloon_stable(self, still=5.0, timeout=120, interval=0.25):
        """Wait until query-balloon stops changing for `still` seconds;
        return (value, seconds waited)."""
        t0 = time.monotonic()
        last = self.query_balloon()
        since = time.monotonic()
        while True:
            time.sleep(interval)
            cur = self.query_balloon()
            now = time.monotonic()
            if cur != last:
                last, since = cur, now
            elif now - since >= still:
                return cur, now - t0
            if now - t0 > timeout:
                raise VMTimeout('query-balloon still moving after %ds '
                                '(%d)' % (timeout, cur))

    def balloon_qom_path(self):
        return '/machine/peripheral/balloon0'

    def guest_stats(self, prev_update=0, timeout=30, interval=0.25):
        """qom-get guest-stats once its last-update is newer than
        prev_update; raise VMTimeout if that takes over timeout s."""
        path = self.balloon_qom_path()
        deadline = time.monotonic() + timeout
        while True:
            g = self.qmp('qom-get', path=path, property='guest-stats')
            if g.get('last-update', 0) > prev_update:
                return g
            if time.monotonic() > deadline:
                raise VMTimeout('guest-stats: expected last-update > %d '
                                'within %d s, got %s'
                                % (prev_update, timeout,
                                   g.get('last-update')))
            time.sleep(interval)

    # ------------------------------------------------------------------
    # host and guest views
    def _proc_field(self, fname, field):
        with open('/proc/%d/%s' % (self.proc.pid, fname)) as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
        return 0

    def rss_kib(self):
        """QEMU's resident set size in KiB."""
        return self._proc_field('status', 'VmRSS')

    def guest_ram_addr(self):
        """Where QEMU maps the guest's RAM (the one anonymous read-write
        mapping of mem_bytes, or up to 4 MiB more), or None."""
        with open('/proc/%d/maps' % self.proc.pid) as f:
            for line in f:
                parts = line.split()
                a, b = (int(x, 16) for x in parts[0].split('-'))
                if (parts[1].startswith('rw') and len(parts) == 5 and
                        self.mem_bytes <= b - a <= self.mem_bytes + 4 * MiB):
                    return a
        return None

    def resident_pages(self, addr):
        """Indices of the guest RAM's 4 KiB pages (mapped at addr) that
        QEMU holds memory for (/proc/<pid>/pagemap, read as root for the
        frame numbers).  A present page whose frame also backs another
        page is the shared zero page (QEMU reads a page to see whether
        it is zero, which maps it there: all of a migration's zero pages
        on the destination), not memory of its own."""
        n = self.mem_bytes >> 12
        with open('/proc/%d/pagemap' % self.proc.pid, 'rb') as f:
            f.seek((addr >> 12) * 8)
            data = f.read(n * 8)
        present = [(i, e & ((1 << 55) - 1)) for i, (e,) in
                   enumerate(struct.iter_unpack('<Q', data)) if e >> 63]
        seen, shared = set(), set()
        for _, pfn in present:
            (shared if pfn in seen else seen).add(pfn)
        return {i for i, pfn in present if pfn not in shared}

    def anon_huge_kib(self):
        """QEMU's anonymous transparent huge pages in KiB."""
        return self._proc_field('smaps_rollup', 'AnonHugePages')

    def meminfo(self):
        """Guest /proc/meminfo as {name: kB}."""
        out = self.sh_ok('cat /proc/meminfo')
        d = {}
        for line in out.splitlines():
            parts = line.replace(':', ' ').split()
            if len(parts) >= 2 and parts[1].isdigit():
                d[parts[0]] = int(parts[1])
        return d

    def vmstat(self):
        out = self.sh_ok('cat /proc/vmstat')
        d = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip('-').isdigit():
                d[parts[0]] = int(parts[1])
        return d

    def driver_module(self):
        return {'vballoon': 'vballoon', 'inkernel': 'virtio_balloon'}.get(
            self.driver)

    def load_driver(self, timeout=60):
        return self.sh('vb-load', timeout)

    def unload_driver(self, timeout=120):
        return self.sh('vb-unload', timeout)

    def sysfs_dir(self):
        """The bound balloon device's sysfs directory in the guest, or None."""
        drv = {'vballoon': 'vballoon', 'inkernel': 'virtio_balloon'}.get(
            self.driver, self.driver)
        rc, out = self.sh('ls -d /sys/bus/virtio/drivers/%s/virtio* '
                          '2>/dev/null' % drv)
        out = out.strip().splitlines()
        return out[0] if rc == 0 and out else None

    # ------------------------------------------------------------------
    # console
    @staticmethod
    def _read_text(path):
        try:
            with open(path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def console_text(self):
        """The console, across migrations."""
        return ''.join(self._read_text(c) for c, _ in
                       self._done_logs + [(self.console_path, None)])

    def bad_console_lines(self, text=None):
        text = self.console_text() if text is None else text
        bad = []
        for line in text.splitlines():
            if any(b.search(line) for b in BENIGN_CONSOLE):
                continue
            if any(p.search(line) for p in BAD_CONSOLE):
                bad.append(line.strip())
        return bad

    def check_console(self):
        """Raise VMError naming the first bad console line, if any."""
        bad = self.bad_console_lines()
        if bad:
            raise VMError('console: %d bad line(s), first: %s'
                          % (len(bad), bad[0]))

    def dmesg_errors(self, pattern='vballoon'):
        """Guest dmesg lines at level err or worse that mention pattern."""
        rc, out = self.sh('dmesg -r', timeout=30)
        if rc != 0:
            return []
        bad = []
        for line in out.splitlines():
            m = re.match(r'<(\d+)>', line)
            if not m:
                continue
            level = int(m.group(1)) & 7
            if level <= 3 and pattern in line and not any(
                    b.search(line) for b in BENIGN_CONSOLE):
                bad.append(line)
        return bad

    # ------------------------------------------------------------------
    def save_logs(self, dest_prefix):
        """Copy console and QEMU logs to dest_prefix.{console,qemu}.log."""
        os.makedirs(os.path.dirname(dest_prefix) or '.', exist_ok=True)
        logs = self._done_logs + [(self.console_path, self.qemu_log_path)]
        for i, suf in enumerate(('console', 'qemu')):
            try:
                with open('%s.%s.log' % (dest_prefix, suf), 'w') as f:
                    f.write(''.join(self._read_text(p[i]) for p in logs))
            except OSError:
                pass

    def close(self):
        """Kill QEMU, close sockets, remove the temporary directory."""
        self._reader_stop = True
        for s in (self._qmp_file, self._qmp_sock, self._sh_sock):
            try:
                if s is not None:
                    s.close()
            except OSError:
                pass
        self._qmp_file = self._qmp_sock = self._sh_sock = None
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                p.terminate()
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(2)
        try:
            self._qemu_log.close()
        except Exception:
            pass
        if self.log_dir:
            self.save_logs(os.path.join(self.log_dir, self.name))
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
        except Exception:
            pass
