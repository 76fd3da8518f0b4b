// The rendezvous store: a small key-value store the ranks meet through before any collective
// (Gloo exchanges its pair addresses through it, NCCL its unique id). Gloo ships no TCP store
// (PyTorch brings its own TCPStore), so rank 0 serves one here; a file store in a shared folder
// is the alternative. All waits are bounded by a timeout: nothing here blocks forever.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace mp::dist {

using Millis = std::chrono::milliseconds;

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& value) = 0;
  // Waits until the key exists (E_DIST when it does not within `timeout`).
  virtual std::vector<char> get(const std::string& key, Millis timeout) = 0;
  virtual bool check(const std::string& key) = 0;
  // Atomically adds `delta` to the integer under `key` (0 when absent) and returns the sum.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // Ranks whose connection to the store closed (their process exited), first to last: the TCP
  // store sees that at once, which names the rank behind a failed collective. A file store
  // cannot: empty.
  virtual std::vector<int> goneRanks() { return {}; }
  // Rank 0 after a failure: keeps serving until every other rank has disconnected (at most
  // `limit`), so that they can still ask who failed — rank 0 is often the first to exit.
  virtual void drain(Millis limit) {}
};

// The TCP store. Rank 0 (serve = true) listens on `port` (all interfaces, as torchrun's store);
// every rank, rank 0 included, connects to host:port, retrying until `timeout` (the master may
// start last), and says which rank it is.
std::unique_ptr<Store> tcpStore(const std::string& host, int port, int rank, bool serve, Millis timeout);

// A store in a folder every rank can reach: one file per key, written atomically (temp + rename).
std::unique_ptr<Store> fileStore(const std::string& dir, Millis pollTimeout);

}  // namespace mp::dist
