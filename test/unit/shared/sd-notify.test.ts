import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sdNotify } from '../../../src/systemd/index.js';
import { waitFor } from '../../lab/exec.js';

t.test('without NOTIFY_SOCKET nothing is sent', async (t) => {
  t.equal(await sdNotify({ READY: '1' }, { env: {} }), false);
});

t.test('READY=1 arrives on the notify socket with MAINPID', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-notify-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'notify');
  // Node cannot bind AF_UNIX datagram sockets; python3 (on every machine we build on) can.
  // systemd-notify (252) follows the message with a BARRIER=1 datagram and fails when nobody
  // receives it, so the receiver stays until the barrier (or a timeout) and prints the rest.
  const receiver = spawn('python3', [
    '-c',
    'import socket,sys\n' +
      's=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n' +
      's.bind(sys.argv[1]); s.settimeout(20)\n' +
      'out=[]\n' +
      'while True:\n' +
      '  try:\n' +
      '    m=s.recv(4096).decode()\n' +
      '  except socket.timeout:\n' +
      '    break\n' +
      '  if m=="BARRIER=1": break\n' +
      '  out.append(m)\n' +
      '  s.settimeout(3)\n' +
      'sys.stdout.write("".join(out)); sys.stdout.flush()',
    sock,
  ]);
  let got = '';
  receiver.stdout.on('data', (b: Buffer) => (got += b.toString()));
  const exited = new Promise((resolve) => receiver.on('exit', resolve));
  t.teardown(() => receiver.kill('SIGKILL'));
  await waitFor(() => existsSync(sock), { what: 'notify socket', timeoutMs: 15_000 });
  const sent = await sdNotify(
    { READY: '1', STATUS: 'leased 10.244.3.0/24' },
    {
      env: { ...process.env, NOTIFY_SOCKET: sock },
      // A PID that exists: systemd-notify passes it as SCM_CREDENTIALS, which the kernel refuses
      // (the send fails) for a process that does not exist. The daemon reports itself.
      pid: process.ppid,
    },
  );
  t.equal(sent, true);
  await exited;
  t.same(got.split('\n').sort(), [`MAINPID=${process.ppid}`, 'READY=1', 'STATUS=leased 10.244.3.0/24']);
});
