// The PeerJS server (npm `peer`, stock options) as its own process, so that it does not
// share the benchmark's event loop, just as the signalpost binary does not.
//   node peer-server.mjs [port]    prints "peerjs listening on http://127.0.0.1:PORT"
import { PeerServer } from "peer";

const port = Number(process.argv[2] ?? 0);
const server = PeerServer({ host: "127.0.0.1", port, path: "/" }, (http) => {
  console.log(`peerjs listening on http://127.0.0.1:${http.address().port}`);
});
server.on("error", (err) => console.error(`peerjs error: ${err?.message ?? err}`));
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
