// Preloaded with `node --import ./listen-reporter.mjs SERVER.js` so that a server started with
// PORT=0 (a free port) says which port it got, and listens on loopback only:
//   - a listen(port[, cb]) without a host is pinned to 127.0.0.1;
//   - once listening, one line `mcptap-peer: listening on http://127.0.0.1:PORT` goes to stderr.
// The servers' own "listening on port 0" lines cannot tell the tests the real port.
import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
    const portOnly = (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0])));
    if (portOnly && (args.length === 1 || typeof args[1] === 'function')) {
        args.splice(1, 0, '127.0.0.1');
    }
    this.once('listening', () => {
        const a = this.address();
        if (a && typeof a === 'object') {
            process.stderr.write(`mcptap-peer: listening on http://127.0.0.1:${a.port}\n`);
        }
    });
    return listen.apply(this, args);
};
