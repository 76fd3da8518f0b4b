// `mixprec launch`: a torchrun-like launcher. Starts N ranks of one command on this node with
// torchrun's environment variables, prefixes their output with the rank, forwards Ctrl-C, and
// stops every rank when one fails (a dead rank leaves the others blocked in a collective).
import { spawn, ChildProcess } from 'node:child_process';
import { Command, InvalidArgumentError } from 'commander';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Writable } from 'node:stream';
import { MixprecError } from '../errors';

export interface LaunchOptions {
  /** Processes on this node (torchrun's --nproc-per-node). */
  nprocPerNode: number;
  /** Nodes in the job (default 1) and this node's index in 0..nnodes-1 (default 0). */
  nnodes?: number;
  nodeRank?: number;
  /** Rank 0's address and port (defaults 127.0.0.1 and 29500, as torchrun). */
  masterAddr?: string;
  masterPort?: number;
  /** Passed to the ranks as MIXPREC_DIST_TIMEOUT_MS. */
  timeoutMs?: number;
  /** How long stopped ranks get between SIGTERM and SIGKILL (default 5000 ms). */
  graceMs?: number;
  /** The ranks' base environment (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Where the prefixed output goes (default process.stdout / process.stderr). */
  stdout?: Writable;
  stderr?: Writable;
  /** Forward SIGINT / SIGTERM / SIGHUP received by this process to the ranks (default true). */
  forwardSignals?: boolean;
}

const fail = (msg: string): never => { throw new MixprecError('E_ARG', msg); };
const isInt = (v: unknown, min: number, max = Number.MAX_SAFE_INTEGER) => Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max;

/** The program and arguments to spawn: `x.js ...` runs under this node, `mixprec ...` under this package's cli.js. */
function resolveCommand(command: string[]): [string, string[]] {
  const [first, ...rest] = command;
  if (first.endsWith('.js')) return [process.execPath, command];
  // From dist/distributed/launch.js; so that `mixprec` need not be on PATH.
  if (first === 'mixprec') return [process.execPath, [path.join(__dirname, '..', 'cli.js'), ...rest]];
  return [first, rest];
}

/** Runs the ranks to completion; resolves with the exit status to use (0, the first failed rank's, 127 / 126 if it cannot start). */
export async function launch(opts: LaunchOptions, command: string[]): Promise<number> {
  const n = opts.nprocPerNode, nnodes = opts.nnodes ?? 1, nodeRank = opts.nodeRank ?? 0;
  const port = opts.masterPort ?? 29500, graceMs = opts.graceMs ?? 5000;
  if (!isInt(n, 1)) fail(`--nproc-per-node must be a positive integer, got ${n}`);
  if (!isInt(nnodes, 1)) fail(`--nnodes must be a positive integer, got ${nnodes}`);
  if (!isInt(nodeRank, 0, nnodes - 1)) fail(`--node-rank must be an integer in 0..${nnodes - 1} (--nnodes ${nnodes}), got ${nodeRank}`);
  if (!isInt(port, 1, 65535)) fail(`--master-port must be an integer in 1..65535, got ${port}`);
  if (opts.timeoutMs !== undefined && !isInt(opts.timeoutMs, 1)) fail(`--timeout-ms must be a positive integer, got ${opts.timeoutMs}`);
  if (!(graceMs >= 0)) fail(`graceMs must be >= 0, got ${graceMs}`);
  if (!Array.isArray(command) || command.length === 0 || !command.every((c) => typeof c === 'string') || command[0] === '')
    fail('missing command: mixprec launch --nproc-per-node N -- <command> [args...]');
  const out = opts.stdout ?? process.stdout, err = opts.stderr ?? process.stderr;
  const base = opts.env ?? process.env;
  // N ranks each sizing their CPU pool to every core would oversubscribe the machine N times.
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const threads = base.MIXPREC_NUM_THREADS ?? String(Math.max(1, Math.floor(cores / n)));
  const [file, args] = resolveCommand(command);

  return new Promise<number>((resolve) => {
    const children: { proc: ChildProcess; closed: boolean }[] = [];
    let status: number | undefined; // the first failure's
    let stopping = false, signalsSeen = 0, open = n;
    let killTimer: NodeJS.Timeout | undefined;

    // Each rank leads its own process group (detached), so that a terminal's Ctrl-C reaches it once,
    // through us, not twice (`mixprec train` quits at once on a second SIGINT); signalling the group
    // also reaches what the rank started (e.g. through `sh -c`).
    const signalAll = (sig: NodeJS.Signals) => {
      for (const c of children) {
        if (c.closed || c.proc.pid === undefined) continue;
        try { process.kill(process.platform === 'win32' ? c.proc.pid : -c.proc.pid, sig); } catch { /* already gone */ }
      }
    };
    const stop = () => {
      if (stopping) return;
      stopping = true;
      signalAll('SIGTERM');
      killTimer = setTimeout(() => signalAll('SIGKILL'), graceMs);
    };
    const failed = (code: number, why: string) => {
      if (status !== undefined) return;
      status = code;
      if (!stopping) err.write(`mixprec launch: ${why}\n`); // after a forwarded signal, deaths are expected
      stop();
    };
    const onSignal = (sig: NodeJS.Signals) => {
      // The first signal is passed on and the ranks get to finish: a rank that ends first is then not a
      // reason to SIGTERM the rest (`mixprec train` saves its checkpoint and exits 130 on Ctrl-C, and the
      // others may still be saving). A second signal (Ctrl-C again) kills them.
      stopping = true;
      signalAll(++signalsSeen > 1 ? 'SIGKILL' : sig);
    };
    // Detached ranks would outlive a launcher that exits some other way (an exception, process.exit).
    const onExit = () => signalAll('SIGKILL');
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    if (opts.forwardSignals ?? true) for (const s of signals) process.on(s, onSignal);
    process.on('exit', onExit);

    const done = () => {
      if (--open > 0) return;
      clearTimeout(killTimer);
      for (const s of signals) process.off(s, onSignal);
      process.off('exit', onExit);
      resolve(status ?? 0);
    };

    for (let local = 0; local < n; local++) {
      const rank = nodeRank * n + local;
      const env: NodeJS.ProcessEnv = {
        ...base, RANK: String(rank), WORLD_SIZE: String(nnodes * n), LOCAL_RANK: String(local), LOCAL_WORLD_SIZE: String(n),
        GROUP_RANK: String(nodeRank), MASTER_ADDR: opts.masterAddr ?? '127.0.0.1', MASTER_PORT: String(port), MIXPREC_NUM_THREADS: threads,
      };
      if (opts.timeoutMs !== undefined) env.MIXPREC_DIST_TIMEOUT_MS = String(opts.timeoutMs);
      const proc = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: process.platform !== 'win32' });
      const c = { proc, closed: false };
      children.push(c);
      prefixLines(proc.stdout!, out, `[rank ${rank}] `);
      prefixLines(proc.stderr!, err, `[rank ${rank}] `);
      proc.on('error', (e: NodeJS.ErrnoException) => {
        if (proc.pid !== undefined) return; // a failed kill: nothing to do
        // As a shell: 127 for a command not found, 126 for one found but not runnable.
        failed(e.code === 'ENOENT' ? 127 : 126, `cannot start '${command[0]}': ${e.message}`);
      });
      // 'exit' reports a failure at once; 'close' (stdio drained too) is when the rank is finished.
      proc.on('exit', (code, sig) => {
        const st = sig ? 128 + (os.constants.signals[sig] ?? 0) : (code ?? 1); // 128+n for signal n, as shells do
        if (st !== 0) failed(st, `rank ${rank} ${sig ? `was killed by ${sig} (status ${st})` : `exited with status ${st}`}${n > 1 ? '; stopping the other ranks' : ''}`);
      });
      proc.on('close', () => { c.closed = true; done(); });
    }
  });
}

/** Copies `src` to `dst` a line at a time with `prefix` before each; an unterminated last line is completed at the end. */
function prefixLines(src: NodeJS.ReadableStream, dst: Writable, prefix: string): void {
  let pending = '';
  src.setEncoding('utf8'); // decodes across chunk boundaries, so a split UTF-8 character is not mangled
  src.on('data', (chunk: string) => {
    const lines = (pending + chunk).split('\n');
    pending = lines.pop()!;
    if (lines.length) dst.write(lines.map((l) => prefix + l + '\n').join(''));
  });
  src.on('end', () => { if (pending) dst.write(prefix + pending + '\n'); });
}

function intOption(what: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string) => {
    const x = Number(v);
    if (v.trim() === '' || !isInt(x, min, max))
      throw new InvalidArgumentError(max === Number.MAX_SAFE_INTEGER ? `${what} must be an integer >= ${min}` : `${what} must be an integer in ${min}..${max}`);
    return x;
  };
}

export function addLaunchCommand(program: Command): void {
  program
    .command('launch')
    .description('run N processes of a command on this node with torchrun\'s environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...), their output prefixed by rank; stops all when one fails')
    .usage('--nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] [--timeout-ms T] -- <command> [args...]')
    .argument('[command...]', 'the command each rank runs (x.js runs under this node; mixprec under this mixprec)')
    .option('--nproc-per-node <n>', 'processes on this node', intOption('--nproc-per-node', 1), 1)
    .option('--nnodes <n>', 'nodes in the job', intOption('--nnodes', 1), 1)
    .option('--node-rank <r>', "this node's index, 0..nnodes-1", intOption('--node-rank', 0), 0)
    .option('--master-addr <addr>', "rank 0's address", '127.0.0.1')
    .option('--master-port <port>', "rank 0's port", intOption('--master-port', 1, 65535), 29500)
    .option('--timeout-ms <t>', 'collective timeout, passed as MIXPREC_DIST_TIMEOUT_MS', intOption('--timeout-ms', 1))
    .action(async (command: string[], o: Omit<LaunchOptions, 'stdout' | 'stderr' | 'env'>, cmd: Command) => {
      if (command.length === 0) cmd.error('error: missing command: mixprec launch --nproc-per-node N -- <command> [args...]', { exitCode: 2 });
      try {
        process.exitCode = await launch(o, command);
      } catch (e) {
        // launch() checks what the flags cannot check alone (--node-rank against --nnodes): a usage error too.
        if (e instanceof MixprecError && e.code === 'E_ARG') cmd.error(`error: ${e.message}`, { exitCode: 2 });
        throw e;
      }
    });
}
