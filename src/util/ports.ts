// A TCP port nothing listens on now (the kernel's pick for port 0): for the rendezvous of a job
// started here (tests, the bench). Another process may take it before it is used; callers that
// start a job at once rarely lose that race.
import * as net from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}
