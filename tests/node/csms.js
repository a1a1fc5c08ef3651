// ocpp-rpc CSMS for the relay tests and bench. Strict mode: every frame is schema-checked.
// Usage: node csms.js '{"protocols":["ocpp1.6","ocpp2.0.1"],"log":true,"deny":["DENY*"],
//                       "callAfterBoot":true,"authDelayMs":0,"strict":true,"port":0}'
// Prints JSON lines on stdout: listening, connect, msg (raw frame + sha256), close, bad.
// Reads JSON lines on stdin: {"cmd":"close","id":"CP1","code":4001,"reason":"bye"}.
'use strict';
const crypto = require('crypto');
const readline = require('readline');
const { RPCServer, createRPCError } = require('ocpp-rpc');

const opts = Object.assign(
    { protocols: ['ocpp1.6', 'ocpp2.0.1'], log: true, deny: [], callAfterBoot: false, port: 0, strict: true, authDelayMs: 0 },
    JSON.parse(process.argv[2] || '{}'),
);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const sha = (m) => crypto.createHash('sha256').update(typeof m === 'string' ? Buffer.from(m, 'utf8') : m).digest('hex');
const globToRe = (g) => new RegExp('^' + g.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*') + '$');
const deny = opts.deny.map(globToRe);

const server = new RPCServer({ protocols: opts.protocols, strictMode: opts.strict, pingIntervalMs: 60000 });
const clients = new Map();
let nextTx = 1000;

server.auth(async (accept, reject, handshake) => {
    // authDelayMs: a slow CSMS, so a charger's handshake waits on the upstream one.
    if (opts.authDelayMs) await new Promise((r) => setTimeout(r, opts.authDelayMs));
    if (deny.some((re) => re.test(handshake.identity))) {
        reject(401, 'Unauthorized');
        return;
    }
    accept({ authorization: handshake.headers.authorization || null });
});

server.on('client', (client) => {
    const id = client.identity;
    clients.set(id, client);
    out({ ev: 'connect', id, protocol: client.protocol, authorization: client.session.authorization });
    if (opts.log) {
        client.on('message', ({ message, outbound }) => {
            const text = typeof message === 'string' ? message : message.toString('utf8');
            out({ ev: 'msg', id, dir: outbound ? 'out' : 'in', sha: sha(message), text });
        });
    }
    client.on('badMessage', ({ error }) => out({ ev: 'bad', id, error: String(error && error.message) }));
    client.on('strictValidationFailure', ({ error }) => out({ ev: 'strict', id, error: String(error) }));
    client.on('close', ({ code, reason }) => {
        clients.delete(id);
        out({ ev: 'close', id, code, reason: String(reason) });
    });
    const now = () => new Date().toISOString();
    const v16 = client.protocol === 'ocpp1.6';

    client.handle('BootNotification', () => {
        if (opts.callAfterBoot) {
            // A CSMS-initiated call, so both directions carry calls as well as results.
            setTimeout(() => {
                const call = v16
                    ? client.call('GetConfiguration', { key: ['HeartbeatInterval'] })
                    : client.call('GetVariables', {
                        getVariableData: [{ component: { name: 'OCPPCommCtrlr' }, variable: { name: 'HeartbeatInterval' } }],
                    });
                call.then((r) => out({ ev: 'callResult', id, result: r })).catch((e) => out({ ev: 'callError', id, error: String(e) }));
            }, 1);
        }
        return { status: 'Accepted', interval: 300, currentTime: now() };
    });
    client.handle('Heartbeat', () => ({ currentTime: now() }));
    client.handle('StatusNotification', () => ({}));
    client.handle('MeterValues', () => ({}));
    client.handle('Authorize', () => (v16 ? { idTagInfo: { status: 'Accepted' } } : { idTokenInfo: { status: 'Accepted' } }));
    client.handle('StartTransaction', () => ({ transactionId: nextTx++, idTagInfo: { status: 'Accepted' } }));
    client.handle('StopTransaction', () => ({ idTagInfo: { status: 'Accepted' } }));
    client.handle('TransactionEvent', ({ params }) => (params.idToken ? { idTokenInfo: { status: 'Accepted' } } : {}));
    client.handle(({ method }) => {
        throw createRPCError('NotImplemented', `${method} not handled`);
    });
});

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
    let cmd;
    try { cmd = JSON.parse(line); } catch (e) { return; }
    if (cmd.cmd === 'close') {
        const c = clients.get(cmd.id);
        if (c) await c.close({ code: cmd.code, reason: cmd.reason || '' });
        out({ ev: 'closed', id: cmd.id });
    } else if (cmd.cmd === 'exit') {
        await server.close({ force: true });
        process.exit(0);
    }
});

server.listen(opts.port, '127.0.0.1').then((http) => out({ ev: 'listening', port: http.address().port }));
process.on('SIGTERM', () => process.exit(0));
