// Helpers for the SDK conformance tests. They start an inferq server process in a temporary
// data directory and make raw calls to the worker and admin routes, which the Together SDK
// lacks. A counting proxy shows how many HTTP requests the SDK really sent.
//
// Everything listens on and connects to 127.0.0.1 only. Every wait has a deadline.
//
// SPDX-License-Identifier: MIT

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Together from 'together-ai';

const COMPAT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// The binary under test: INFERQ_BIN, or build/inferq of this repository.
export const INFERQ_BIN = process.env.INFERQ_BIN
	? path.resolve(process.env.INFERQ_BIN)
	: path.resolve(COMPAT_DIR, '../../build/inferq');

export const UUID7_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
export const TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;
// A well-formed UUIDv7 that no server generates: its timestamp is in 1970.
export const UNKNOWN_ID = '00000000-0001-7000-8000-000000000001';

const START_TIMEOUT_MS = 10000;
const STOP_TIMEOUT_MS = 10000;
// The start-up line with the bound port; the config line naming port 0 does not match.
const LISTEN_RE = /listening on 127\.0\.0\.1:([1-9][0-9]*)/;

/**
 * Starts `inferq serve` on a free port of 127.0.0.1 with a fresh data directory.
 * Resolves to { port, origin, baseURL, adminKey, dataDir, output(), stop() } once the server
 * logged its port and wrote the admin key. Rejects with the server's output when it exits or
 * does not start within 10 s.
 */
export async function startServer(extraArgs = []) {
	if (!fs.existsSync(INFERQ_BIN)) {
		throw new Error(
			`inferq binary not found at ${INFERQ_BIN}; run make in the repository root, ` +
				'or set INFERQ_BIN to the binary to test',
		);
	}
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferq-compat-'));
	const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, ...extraArgs];
	const child = spawn(INFERQ_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
	let output = '';
	child.stdout.on('data', (chunk) => (output += chunk));
	child.stderr.on('data', (chunk) => (output += chunk));
	const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));

	const port = await new Promise((resolve, reject) => {
		const timer = setTimeout(() => {
			child.kill('SIGKILL');
			reject(new Error(`inferq did not log its port within ${START_TIMEOUT_MS} ms:\n${output}`));
		}, START_TIMEOUT_MS);
		const check = () => {
			const match = LISTEN_RE.exec(output);
			if (match) {
				clearTimeout(timer);
				resolve(Number(match[1]));
			}
		};
		child.stdout.on('data', check);
		child.stderr.on('data', check);
		exited.then(({ code, signal }) => {
			clearTimeout(timer);
			reject(new Error(`inferq exited (code ${code}, signal ${signal}) before listening:\n${output}`));
		});
	});

	const adminKey = fs.readFileSync(path.join(dataDir, 'admin.key'), 'utf8').trim();
	const origin = `http://127.0.0.1:${port}`;

	async function stop() {
		if (child.exitCode === null && child.signalCode === null) {
			child.kill('SIGTERM');
			const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
			await exited;
			clearTimeout(timer);
		}
		fs.rmSync(dataDir, { recursive: true, force: true });
		return exited;
	}

	return { port, origin, baseURL: `${origin}/v1`, adminKey, dataDir, output: () => output, stop };
}

/** Returns an SDK client for baseURL with the given key; maxRetries 0 unless set. */
export function sdkClient(baseURL, apiKey, options = {}) {
	return new Together({ baseURL, apiKey, maxRetries: 0, timeout: 10000, ...options });
}

/**
 * Sends one JSON request with fetch, outside the SDK. Resolves to { status, headers, body }
 * where body is the parsed JSON, or null for an empty body.
 */
export async function rawRequest(origin, key, method, route, body) {
	const headers = { Authorization: `Bearer ${key}` };
	if (body !== undefined) headers['Content-Type'] = 'application/json';
	const response = await fetch(origin + route, {
		method,
		headers,
		body: body === undefined ? undefined : JSON.stringify(body),
		signal: AbortSignal.timeout(10000),
	});
	const text = await response.text();
	return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
}

async function workerCall(origin, key, route, body) {
	const result = await rawRequest(origin, key, 'POST', route, body);
	if (result.status !== 200) {
		throw new Error(`POST ${route} answered ${result.status}: ${JSON.stringify(result.body)}`);
	}
	return result.body;
}

/** Claims the next pending job of model; fails when none is pending. */
export function claimJob(origin, key, model) {
	return workerCall(origin, key, '/v1/queue/claim', { model, worker: 'compat-test' });
}

/** Completes a claimed job with outputs. */
export function completeJob(origin, key, claim, outputs) {
	const { model, request_id, claim_id } = claim;
	return workerCall(origin, key, '/v1/queue/complete', { model, request_id, claim_id, outputs });
}

/** Fails a claimed job with the error text. */
export function failJob(origin, key, claim, error) {
	const { model, request_id, claim_id } = claim;
	return workerCall(origin, key, '/v1/queue/fail', { model, request_id, claim_id, error });
}

/** Creates an API key with POST /v1/admin/keys and resolves to the new key. */
export async function createKey(origin, adminKey, name, role, models) {
	const body = await workerCall(origin, adminKey, '/v1/admin/keys', { name, role, models });
	return body.key;
}

/**
 * Awaits promise and returns what it rejected with; fails the test when it resolves.
 */
export async function rejection(promise) {
	try {
		const value = await promise;
		throw new Error(`expected the call to fail, but it returned ${JSON.stringify(value)}`);
	} catch (err) {
		return err;
	}
}

/**
 * Starts an HTTP proxy on 127.0.0.1 that forwards every request to targetPort and records
 * it. With stripShouldRetry it removes `x-should-retry` from the responses, so the SDK falls
 * back to its own status-based retry rules. Resolves to { baseURL, requests, close() };
 * requests lists { method, url, retryCount, idempotencyKey } in arrival order.
 */
export async function startCountingProxy(targetPort, { stripShouldRetry = false } = {}) {
	const requests = [];
	const server = http.createServer((req, res) => {
		requests.push({
			method: req.method,
			url: req.url,
			retryCount: req.headers['x-stainless-retry-count'],
			idempotencyKey: req.headers['idempotency-key'],
		});
		const upstream = http.request(
			{
				host: '127.0.0.1',
				port: targetPort,
				method: req.method,
				path: req.url,
				headers: req.headers,
			},
			(upstreamRes) => {
				const headers = { ...upstreamRes.headers };
				if (stripShouldRetry) delete headers['x-should-retry'];
				res.writeHead(upstreamRes.statusCode, headers);
				upstreamRes.pipe(res);
			},
		);
		upstream.on('error', (err) => {
			res.writeHead(502, { 'content-type': 'text/plain' });
			res.end(`proxy: ${err.message}`);
		});
		req.pipe(upstream);
	});
	await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
	const { port } = server.address();
	return {
		baseURL: `http://127.0.0.1:${port}/v1`,
		requests,
		close: () =>
			new Promise((resolve) => {
				server.closeAllConnections();
				server.close(resolve);
			}),
	};
}

/**
 * Stops server with SIGTERM and throws with its output when it did not exit with status 0.
 * Under AddressSanitizer a leak or error report makes that status non-zero.
 */
export async function stopCleanly(server) {
	const { code, signal } = await server.stop();
	if (code !== 0) {
		throw new Error(`inferq exited with code ${code}, signal ${signal} after SIGTERM:\n${server.output()}`);
	}
}
