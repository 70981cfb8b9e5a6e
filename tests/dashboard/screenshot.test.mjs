// Takes the screenshot of the Queues view that the README shows: three models with traffic
// over several refreshes, so both charts have a history. The picture goes to
// build/artifacts/dashboard.png (INFERQ_ARTIFACTS sets another folder); with
// INFERQ_DOCS_SCREENSHOT=1 it also replaces docs/dashboard.png.
//
// This test needs the admin API (GET /v1/admin/queues). Against a server without it, it
// fails with the page's "not available" notice in its message.
//
// SPDX-License-Identifier: MIT

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { it } from 'node:test';

import {
	ARTIFACTS_DIR,
	REPO_DIR,
	assertNoProblems,
	claim,
	complete,
	fail,
	signIn,
	submit,
	useDashboard,
	waitForView,
} from './support/dashboard.mjs';

// This file's server has no other jobs, so the picture shows only these models.
const env = useDashboard();
const MODELS = ['acme/video-gen', 'acme/upscale', 'acme/caption'];
const ROUNDS = 8;

// Submits some jobs to each model and has workers finish a few, failing one in six.
async function traffic(server, round) {
	for (const [n, model] of MODELS.entries()) {
		// More submits than claims per round, so each claim finds a job and the backlog grows.
		for (let i = 0; i < 7 + n * 2 + (round % 3); i++) await submit(server, model, { round, i });
		for (let i = 0; i < 3 + n + (round % 4); i++) {
			const claimed = await claim(server, model, `gpu-${n}`);
			if (i % 6 === 5) await fail(server, claimed, 'CUDA out of memory');
			else await complete(server, claimed, { ok: true });
		}
	}
	// One job per round stays running, so the running line rises too.
	await claim(server, MODELS[round % MODELS.length], `gpu-${round % MODELS.length}`);
}

it('queues view screenshot', async () => {
	const { page, problems } = await env.open({ width: 1280, height: 640 });
	await signIn(page, env.server);
	await waitForView(page, '[data-testid=queues-table]');

	for (let round = 0; round < ROUNDS; round++) {
		await traffic(env.server, round);
		const before = await page.locator('#refresh-state').textContent();
		await page.waitForFunction((text) => document.getElementById('refresh-state').textContent !== text, before);
	}
	const rows = page.locator('[data-testid=queues-table] tbody tr');
	assert.equal(await rows.count(), MODELS.length);

	fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
	const file = path.join(ARTIFACTS_DIR, 'dashboard.png');
	await page.screenshot({ path: file, fullPage: true });
	assert.ok(fs.statSync(file).size > 10000, `${file} is too small to show the page`);
	if (process.env.INFERQ_DOCS_SCREENSHOT === '1') {
		fs.copyFileSync(file, path.join(REPO_DIR, 'docs/dashboard.png'));
	}
	assertNoProblems(problems);
});
