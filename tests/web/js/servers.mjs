// Real `hubbub serve` processes for the client's tests under `node --test`, on free
// loopback ports (the ports are read from the startup log line, like tests/procs.py).
// tests/web/test_js_client.py runs these tests and passes HUBBUB_TEST_PYTHON (the venv's
// interpreter) and HUBBUB_TEST_REDIS (a redis-server it started).

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const REDIS = process.env.HUBBUB_TEST_REDIS ?? null;
export const SECRET = "js-test-secret";

/** Start a node with TOML `config`; resolves once it logged where it listens. */
export function startNode(config = "", { redis = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "hubbub-js-"));
  const path = join(dir, "hubbub.toml");
  writeFileSync(path, config);
  const args = ["-m", "hubbub.server.cli", "serve", "--tcp", "", "--ws", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--config", path];
  for (const url of redis) args.push("--redis", url);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HUBBUB_")));
  const proc = spawn(process.env.HUBBUB_TEST_PYTHON ?? "python3", args, { cwd: ROOT, env, stdio: ["ignore", "ignore", "pipe"] });
  const exited = new Promise((done) => proc.on("exit", (code) => done(code)));
  let log = "";
  return new Promise((ok, fail) => {
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const line = log.split("\n").find((l) => l.includes("event=listening"));
      if (!line) return;
      const ws = /\bws=(\S+)/.exec(line)[1];
      ok({
        url: `ws://${ws}/ws`,
        proc,
        exited,
        log: () => log,
        /** SIGTERM: the node drains (3001 to every client) and exits. */
        term: () => (proc.exitCode === null && proc.kill("SIGTERM"), exited),
        stop: () => (proc.exitCode === null && (proc.kill("SIGINT"), proc.kill("SIGINT")), exited),
      });
    });
    exited.then((code) => fail(new Error(`hubbub exited ${code} before listening:\n${log}`)));
  });
}

/** An HS256 JWT for `sub` that expires in `seconds`. */
export function makeToken(sub, seconds, secret = SECRET, claims = {}) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + seconds, ...claims })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** Resolve when `predicate()` holds (polled); reject with `what` after `ms`. */
export async function until(predicate, what, ms = 15000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
