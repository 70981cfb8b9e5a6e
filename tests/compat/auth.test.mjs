// Checks how inferq's authentication responses reach the official Together TypeScript SDK:
// a wrong key on every queue method, a key whose role may not use a route, a key whose model
// patterns do not cover the model, and the rate limit on repeated failed authentication.
//
// SPDX-License-Identifier: MIT

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
	AuthenticationError,
	NotFoundError,
	PermissionDeniedError,
	RateLimitError,
} from 'together-ai';

import { UNKNOWN_ID, createKey, rejection, sdkClient, startServer, stopCleanly } from './support/inferq.mjs';

// A key of the right shape that the server never issued.
const WRONG_KEY = `iq_${'0'.repeat(64)}`;

// One call of each queue method, for tests that run the same check on all of them.
const CALLS = {
	submit: (queue) => queue.submit({ model: 'compat/auth', payload: {} }),
	retrieve: (queue) => queue.retrieve({ model: 'compat/auth', request_id: UNKNOWN_ID }),
	cancel: (queue) => queue.cancel({ model: 'compat/auth', request_id: UNKNOWN_ID }),
	clear: (queue) => queue.clear({ model: 'compat/auth' }),
	metrics: (queue) => queue.metrics({ model: 'compat/auth' }),
};

describe('keys and roles', () => {
	let server;

	before(async () => {
		server = await startServer();
	});

	after(async () => {
		if (server) await stopCleanly(server);
	});

	for (const [name, call] of Object.entries(CALLS)) {
		it(`${name} with a wrong key is AuthenticationError`, async () => {
			const queue = sdkClient(server.baseURL, WRONG_KEY).beta.jig.queue;
			const err = await rejection(call(queue));
			assert.ok(err instanceof AuthenticationError, `got ${err.constructor.name}: ${err}`);
			assert.equal(err.status, 401);
			assert.equal(err.error.type, 'authentication_error');
			assert.equal(err.error.code, 'invalid_api_key');
			assert.match(err.error.message, /^invalid API key/);
			assert.equal(err.message, `401 ${err.error.message}`);
			assert.ok(!err.message.includes(WRONG_KEY), 'the error repeats the key');
			assert.equal(err.headers.get('www-authenticate'), 'Bearer realm="inferq", error="invalid_token"');
			assert.equal(err.headers.get('x-should-retry'), 'false');
		});
	}

	it('empty key is AuthenticationError missing_api_key', async () => {
		// The SDK sends "Authorization: Bearer " with nothing after the scheme.
		const queue = sdkClient(server.baseURL, '').beta.jig.queue;
		const err = await rejection(queue.metrics({ model: 'compat/auth' }));
		assert.ok(err instanceof AuthenticationError, `got ${err.constructor.name}: ${err}`);
		assert.equal(err.status, 401);
		assert.equal(err.error.code, 'missing_api_key');
		assert.match(err.error.message, /Authorization: Bearer KEY/);
		assert.equal(err.headers.get('www-authenticate'), 'Bearer realm="inferq"');
	});

	it('worker key on submit is PermissionDeniedError', async () => {
		const workerKey = await createKey(server.origin, server.adminKey, 'compat-worker', 'worker', ['*']);
		const queue = sdkClient(server.baseURL, workerKey).beta.jig.queue;

		const err = await rejection(queue.submit({ model: 'compat/auth', payload: {} }));
		assert.ok(err instanceof PermissionDeniedError, `got ${err.constructor.name}: ${err}`);
		assert.equal(err.status, 403);
		assert.equal(err.error.type, 'permission_error');
		assert.equal(err.error.code, 'permission_denied');
		assert.match(err.error.message, /worker/);

		// A worker key may read a job's status.
		const admin = sdkClient(server.baseURL, server.adminKey).beta.jig.queue;
		const { requestId } = await admin.submit({ model: 'compat/auth', payload: {} });
		const job = await queue.retrieve({ model: 'compat/auth', request_id: requestId });
		assert.equal(job.status, 'pending');
	});

	it('model outside the key patterns is NotFoundError', async () => {
		const clientKey = await createKey(server.origin, server.adminKey, 'compat-tenant-a', 'client', [
			'tenant-a/*',
		]);
		const queue = sdkClient(server.baseURL, clientKey).beta.jig.queue;
		const admin = sdkClient(server.baseURL, server.adminKey).beta.jig.queue;

		const own = await queue.submit({ model: 'tenant-a/video', payload: {} });
		assert.equal((await queue.retrieve({ model: 'tenant-a/video', request_id: own.requestId })).status, 'pending');

		const submitErr = await rejection(queue.submit({ model: 'tenant-b/video', payload: {} }));
		assert.ok(submitErr instanceof NotFoundError, `got ${submitErr.constructor.name}: ${submitErr}`);
		assert.equal(submitErr.status, 404);
		assert.equal(submitErr.error.type, 'not_found_error');
		assert.match(submitErr.error.message, /^model tenant-b\/video not found/);

		// Another tenant's job gets the same response as a job that does not exist.
		const other = await admin.submit({ model: 'tenant-b/video', payload: {} });
		const foreignErr = await rejection(queue.retrieve({ model: 'tenant-b/video', request_id: other.requestId }));
		const unknownErr = await rejection(admin.retrieve({ model: 'tenant-b/video', request_id: UNKNOWN_ID }));
		assert.ok(foreignErr instanceof NotFoundError, `got ${foreignErr.constructor.name}: ${foreignErr}`);
		assert.ok(unknownErr instanceof NotFoundError, `got ${unknownErr.constructor.name}: ${unknownErr}`);
		assert.equal(
			foreignErr.error.message.replace(other.requestId, 'ID'),
			unknownErr.error.message.replace(UNKNOWN_ID, 'ID'),
		);
	});
});

describe('failed authentication limit', () => {
	let server;

	before(async () => {
		server = await startServer();
	});

	after(async () => {
		if (server) await stopCleanly(server);
	});

	it('turns 401 into RateLimitError with Retry-After', async () => {
		const queue = sdkClient(server.baseURL, WRONG_KEY).beta.jig.queue;
		// The server allows 20 failures from one address within 10 s; the 21st is 429.
		for (let i = 0; i < 20; i++) {
			const err = await rejection(queue.metrics({ model: 'compat/auth' }));
			assert.ok(err instanceof AuthenticationError, `attempt ${i + 1}: got ${err.constructor.name}: ${err}`);
		}
		const err = await rejection(queue.metrics({ model: 'compat/auth' }));
		assert.ok(err instanceof RateLimitError, `got ${err.constructor.name}: ${err}`);
		assert.equal(err.status, 429);
		assert.equal(err.error.type, 'rate_limit_error');
		assert.equal(err.error.code, 'too_many_auth_failures');
		const retryAfter = Number(err.headers.get('retry-after'));
		assert.ok(retryAfter >= 1, `Retry-After: ${err.headers.get('retry-after')}`);
		assert.ok(retryAfter <= 60, `Retry-After: ${err.headers.get('retry-after')}`);
		assert.equal(err.headers.get('x-should-retry'), 'false');

		// A valid key from the same address still passes.
		const admin = sdkClient(server.baseURL, server.adminKey).beta.jig.queue;
		assert.deepEqual(await admin.metrics({ model: 'compat/auth' }), {
			messages_waiting: 0,
			messages_running: 0,
			total_jobs: 0,
		});
	});
});
