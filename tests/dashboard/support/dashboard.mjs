// Helpers for the dashboard tests: an inferq server in a temporary data directory, raw API
// calls that play the client and the worker, and a headless Chromium page that records every
// console error, page error and failed request, so a test can assert there were none.
//
// Everything listens on and connects to 127.0.0.1 only. Every wait has a deadline.
//
// SPDX-License-Identifier: MIT

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const SUITE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = path.resolve(SUITE_DIR, '../..');

// The binary under test: INFERQ_BIN, or build/inferq of this repository.
export const INFERQ_BIN = process.env.INFERQ_BIN
	? path.resolve(process.env.INFERQ_BIN)
	: path.join(REPO_DIR, 'build/inferq');
// Debian's chromium package; INFERQ_CHROMIUM names another build.
export const CHROMIUM = process.env.INFERQ_CHROMIUM || '/usr/bin/chromium';
// Where screenshots go: INFERQ_ARTIFACTS, or build/artifacts of this repository.
export const ARTIFACTS_DIR = process.env.INFERQ_ARTIFACTS
	? path.resolve(process.env.INFERQ_ARTIFACTS)
	: path.join(REPO_DIR, 'build/artifacts');

// How long a test waits for the page to show a state; the page refreshes every 2 s.
export const UI_TIMEOUT_MS = 10000;
const START_TIMEOUT_MS = 10000;
const STOP_TIMEOUT_MS = 10000;
const LISTEN_RE = /listening on 127\.0\.0\.1:([1-9][0-9]*)/;

/**
 * Starts `inferq serve` on a free port of 127.0.0.1 with a fresh data directory. Resolves to
 * { origin, adminKey, dataDir, output(), stop() } once the server logged its port.
 */
export async function startServer(extraArgs = []) {
	if (!fs.existsSync(INFERQ_BIN)) {
		throw new Error(`inferq binary not found at ${INFERQ_BIN}; run make, or set INFERQ_BIN`);
	}
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferq-dashboard-'));
	const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, ...extraArgs];
	const child = spawn(INFERQ_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
	let output = '';
	const collect = (chunk) => (output += chunk);
	child.stdout.on('data', collect);
	child.stderr.on('data', collect);
	const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));

	const port = await new Promise((resolve, reject) => {
		const timer = setTimeout(() => {
			child.kill('SIGKILL');
			reject(new Error(`inferq did not log its port within ${START_TIMEOUT_MS} ms:\n${output}`));
		}, START_TIMEOUT_MS);
		const check = () => {
			const match = LISTEN_RE.exec(output);
			if (!match) return;
			clearTimeout(timer);
			resolve(Number(match[1]));
		};
		child.stdout.on('data', check);
		child.stderr.on('data', check);
		exited.then(({ code, signal }) => {
			clearTimeout(timer);
			reject(new Error(`inferq exited (code ${code}, signal ${signal}) before listening:\n${output}`));
		});
	});

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

	const adminKey = fs.readFileSync(path.join(dataDir, 'admin.key'), 'utf8').trim();
	return { origin: `http://127.0.0.1:${port}`, adminKey, dataDir, output: () => output, stop };
}

/** Stops server and throws with its output unless it exited with status 0. */
export async function stopCleanly(server) {
	const { code, signal } = await server.stop();
	if (code !== 0) {
		throw new Error(`inferq exited with code ${code}, signal ${signal} after SIGTERM:\n${server.output()}`);
	}
}

/** Sends one JSON request and resolves to { status, body } (body null when empty). */
export async function call(server, method, route, body, key = server.adminKey) {
	const headers = { Authorization: `Bearer ${key}` };
	if (body !== undefined) headers['Content-Type'] = 'application/json';
	const response = await fetch(server.origin + route, {
		method,
		headers,
		body: body === undefined ? undefined : JSON.stringify(body),
		signal: AbortSignal.timeout(10000),
	});
	const text = await response.text();
	return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function ok(server, method, route, body) {
	const result = await call(server, method, route, body);
	if (result.status !== 200) {
		throw new Error(`${method} ${route} answered ${result.status}: ${JSON.stringify(result.body)}`);
	}
	return result.body;
}

/** Submits a job and resolves to its request id. */
export async function submit(server, model, payload, fields = {}) {
	const body = await ok(server, 'POST', '/v1/queue/submit', { model, payload, ...fields });
	return body.request_id;
}

/** Claims the next pending job of model as worker; fails when none is pending. */
export function claim(server, model, worker) {
	return ok(server, 'POST', '/v1/queue/claim', { model, worker });
}

export function complete(server, claimed, outputs) {
	const { model, request_id, claim_id } = claimed;
	return ok(server, 'POST', '/v1/queue/complete', { model, request_id, claim_id, outputs });
}

export function fail(server, claimed, error) {
	const { model, request_id, claim_id } = claimed;
	return ok(server, 'POST', '/v1/queue/fail', { model, request_id, claim_id, error });
}

export async function jobStatus(server, model, requestId) {
	const query = new URLSearchParams({ model, request_id: requestId });
	return ok(server, 'GET', `/v1/queue/status?${query}`);
}

/** Launches headless Chromium; as root it needs --no-sandbox. */
export function launchBrowser() {
	if (!fs.existsSync(CHROMIUM)) {
		throw new Error(`Chromium not found at ${CHROMIUM}; install Debian's chromium package, or set INFERQ_CHROMIUM`);
	}
	const args = process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [];
	return chromium.launch({ executablePath: CHROMIUM, args, timeout: 30000 });
}

/**
 * Opens a new page in its own context (own sessionStorage) and records its problems: console
 * errors, uncaught page errors, requests that failed without a response (except those a
 * navigation aborted) and responses with a status of 400 or more. Returns { page, problems, expectStatus(status) }; a test that
 * provokes a 401 or 409 on purpose calls expectStatus() first, which also allows the console
 * error Chromium logs for such a response.
 */
export async function openPage(browser, viewport = { width: 1280, height: 800 }) {
	const context = await browser.newContext({ viewport });
	const page = await context.newPage();
	page.setDefaultTimeout(UI_TIMEOUT_MS);
	const problems = [];
	const expected = new Set();
	page.on('console', (msg) => {
		if (msg.type() !== 'error') return;
		const allowed = [...expected].some((s) => msg.text().includes(`status of ${s}`));
		if (!allowed) problems.push(`console error: ${msg.text()}`);
	});
	page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
	page.on('requestfailed', (req) => {
		// A reload or navigation abandons the page's requests in flight: not a failure.
		if (req.failure()?.errorText === 'net::ERR_ABORTED') return;
		problems.push(`request failed: ${req.method()} ${req.url()}: ${req.failure()?.errorText}`);
	});
	page.on('response', (res) => {
		if (res.status() >= 400 && !expected.has(res.status())) {
			problems.push(`HTTP ${res.status()}: ${res.request().method()} ${res.url()}`);
		}
	});
	return {
		page,
		context,
		problems,
		expectStatus: (status) => expected.add(status),
		close: () => context.close(),
	};
}

/** Loads the dashboard at hash (e.g. "#/workers") and answers the key dialog with key. */
export async function signIn(page, server, hash = '', key = server.adminKey) {
	await page.goto(`${server.origin}/${hash}`);
	await page.locator('#key-dialog[open]').waitFor();
	await page.fill('#key-input', key);
	await page.click('#key-form button[type=submit]');
}

/** Returns a model name unique to this process and call. */
let modelCount = 0;
export function uniqueModel(name) {
	modelCount += 1;
	return `dash-test/${name}-${process.pid}-${modelCount}`;
}

/** Confirms the open confirmation dialog with its action button. */
export async function confirmDialog(page) {
	await page.locator('#confirm-dialog[open]').waitFor();
	await page.click('#confirm-yes');
}

/**
 * Registers the hooks of one test file: a server and a browser for the whole file, and a page
 * context per test, closed after it. Returns { server, browser, open(viewport) }, whose
 * server and browser are set once the before hook ran; open() resolves to openPage()'s result.
 */
export function useDashboard() {
	const env = { server: null, browser: null, open: null };
	let session = null;

	before(async () => {
		env.server = await startServer();
		env.browser = await launchBrowser();
	});
	after(async () => {
		if (env.browser) await env.browser.close();
		if (env.server) await stopCleanly(env.server);
	});
	afterEach(async () => {
		if (session) await session.close();
		session = null;
	});
	env.open = async (viewport) => {
		session = await openPage(env.browser, viewport);
		return session;
	};
	return env;
}

/** Fails with the recorded problems, one per line, unless there were none. */
export function assertNoProblems(problems) {
	assert.deepEqual(problems, [], `the page had problems:\n${problems.join('\n')}`);
}

/**
 * Waits for selector to show. Fails at once with the page's notice when it shows "Not
 * available" instead, as it does on a server without the admin API.
 */
export async function waitForView(page, selector) {
	const notice = page.locator('[data-testid=not-available]');
	await page.locator(`${selector}, [data-testid=not-available]`).first().waitFor();
	if (await notice.count()) {
		throw new Error(`the page shows a notice instead of ${selector}: ${await notice.textContent()}`);
	}
}
