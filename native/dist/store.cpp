// The TCP and file rendezvous stores (store.h). The TCP protocol is one request, one reply:
//   request  u8 op | u32 key length | key | u32 value length | value
//   reply    u8 status (0 ok, 1 timed out) | u32 length | data
// The server runs on threads of its own in rank 0's process (one per connection: a world is a
// few dozen ranks at most), so it answers while rank 0's JS thread is inside a blocking call.
#include "store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "../core/error.h"

namespace mp::dist {
namespace {

enum Op : uint8_t { kHello = 1, kSet = 2, kGet = 3, kCheck = 4, kAdd = 5, kGone = 6 };

std::string sysError(const std::string& what) { return what + ": " + std::strerror(errno); }

// Full reads / writes; false when the peer closed the connection or an error occurred.
template <bool kSend>
bool transferAll(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = kSend ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
    if (r == 0 && !kSend) return false;
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}
bool readAll(int fd, void* buf, size_t n) { return transferAll<false>(fd, static_cast<char*>(buf), n); }
bool writeAll(int fd, const void* buf, size_t n) { return transferAll<true>(fd, const_cast<char*>(static_cast<const char*>(buf)), n); }

bool readBlob(int fd, std::vector<char>& out, uint32_t limit = 64u << 20) {
  uint32_t len;
  if (!readAll(fd, &len, 4) || len > limit) return false;
  out.resize(len);
  return len == 0 || readAll(fd, out.data(), len);
}
bool writeBlob(int fd, const void* data, uint32_t len) {
  return writeAll(fd, &len, 4) && (len == 0 || writeAll(fd, data, len));
}

// --- server ---

class Server {
 public:
  explicit Server(int port) {
    listenFd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listenFd_ < 0) fail("E_DIST", sysError("store: socket"));
    int one = 1;
    ::setsockopt(listenFd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(listenFd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listenFd_, 128) != 0) {
      std::string msg = sysError("rank 0 cannot serve the rendezvous store on port " + std::to_string(port));
      ::close(listenFd_);
      fail("E_DIST", msg + (errno == EADDRINUSE ? " (another run, or another program, holds it: choose another MASTER_PORT)" : ""));
    }
    if (::pipe2(wake_, O_CLOEXEC) != 0) {
      ::close(listenFd_);
      fail("E_DIST", sysError("store: pipe"));
    }
    acceptor_ = std::thread([this] { acceptLoop(); });
  }

  // Waits until no client is connected (or the deadline).
  void drain(Millis limit) {
    std::unique_lock<std::mutex> g(mu_);
    cv_.wait_for(g, limit, [&] { return clients_.empty(); });
  }

  ~Server() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stopping_ = true;
      for (int fd : clients_) ::shutdown(fd, SHUT_RDWR);  // unblocks their recv()
    }
    cv_.notify_all();
    (void)!::write(wake_[1], "x", 1);
    acceptor_.join();
    for (auto& t : workers_) t.join();
    ::close(listenFd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

 private:
  void acceptLoop() {
    for (;;) {
      pollfd fds[2] = {{listenFd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
      if (fds[1].revents) return;
      if (!(fds[0].revents & POLLIN)) continue;
      int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::lock_guard<std::mutex> g(mu_);
      if (stopping_) {
        ::close(fd);
        return;
      }
      clients_.insert(fd);
      workers_.emplace_back([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    int rank = -1;
    std::vector<char> key, value;
    for (;;) {
      uint8_t op;
      if (!readAll(fd, &op, 1) || !readBlob(fd, key, 1 << 16) || !readBlob(fd, value)) break;
      std::string k(key.begin(), key.end());
      std::vector<char> reply;
      uint8_t status = 0;
      std::unique_lock<std::mutex> g(mu_);
      if (op == kHello && value.size() == 4) {
        std::memcpy(&rank, value.data(), 4);
      } else if (op == kSet) {
        data_[k] = value;
        cv_.notify_all();
      } else if (op == kGet && value.size() == 8) {
        int64_t ms;
        std::memcpy(&ms, value.data(), 8);
        bool found = cv_.wait_for(g, Millis(ms), [&] { return stopping_ || data_.count(k) > 0; });
        if (found && data_.count(k)) reply = data_[k];
        else status = 1;
      } else if (op == kCheck) {
        reply.push_back(data_.count(k) ? 1 : 0);
      } else if (op == kAdd && value.size() == 8) {
        int64_t delta, sum = 0;
        std::memcpy(&delta, value.data(), 8);
        auto it = data_.find(k);
        if (it != data_.end() && it->second.size() == 8) std::memcpy(&sum, it->second.data(), 8);
        sum += delta;
        data_[k].assign(reinterpret_cast<char*>(&sum), reinterpret_cast<char*>(&sum) + 8);
        cv_.notify_all();
        reply = data_[k];
      } else if (op == kGone) {
        for (int r : gone_) reply.insert(reply.end(), reinterpret_cast<const char*>(&r), reinterpret_cast<const char*>(&r) + 4);
      } else {
        break;  // a malformed request: drop the connection
      }
      g.unlock();
      if (!writeAll(fd, &status, 1) || !writeBlob(fd, reply.data(), static_cast<uint32_t>(reply.size()))) break;
    }
    std::lock_guard<std::mutex> g(mu_);
    if (rank >= 0 && !stopping_ && std::find(gone_.begin(), gone_.end(), rank) == gone_.end()) gone_.push_back(rank);
    clients_.erase(fd);
    ::close(fd);
    cv_.notify_all();
  }

  int listenFd_ = -1;
  int wake_[2] = {-1, -1};
  std::thread acceptor_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::set<int> clients_;
  std::vector<int> gone_;  // in the order they disconnected: the first is the likely cause
  std::map<std::string, std::vector<char>> data_;
};

// --- client ---

class TcpStore : public Store {
 public:
  TcpStore(const std::string& host, int port, int rank, bool serve, Millis timeout)
      : where_(host + ":" + std::to_string(port)) {
    if (serve) server_ = std::make_unique<Server>(port);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string last;
    while ((fd_ = connectOnce(host, port, &last)) < 0) {
      if (std::chrono::steady_clock::now() >= deadline)
        fail("E_DIST", "rank " + std::to_string(rank) + " could not reach the rendezvous store at " + where_ +
                           " (served by rank 0) within " + std::to_string(timeout.count()) + " ms: " + last);
      std::this_thread::sleep_for(Millis(50));
    }
    int32_t r = rank;
    request(kHello, "", std::vector<char>(reinterpret_cast<char*>(&r), reinterpret_cast<char*>(&r) + 4), timeout);
  }
  ~TcpStore() override {
    if (fd_ >= 0) ::close(fd_);
    server_.reset();
  }

  void set(const std::string& key, const std::vector<char>& value) override { request(kSet, key, value, Millis(30000)); }
  std::vector<char> get(const std::string& key, Millis timeout) override {
    int64_t ms = timeout.count();
    std::vector<char> v(reinterpret_cast<char*>(&ms), reinterpret_cast<char*>(&ms) + 8);
    uint8_t status;
    auto r = request(kGet, key, v, timeout + Millis(5000), &status);
    if (status != 0) fail("E_DIST", "timed out after " + std::to_string(ms) + " ms waiting for '" + key + "' in the rendezvous store (a rank did not arrive)");
    return r;
  }
  bool check(const std::string& key) override {
    auto r = request(kCheck, key, {}, Millis(30000));
    return !r.empty() && r[0] == 1;
  }
  int64_t add(const std::string& key, int64_t delta) override {
    auto r = request(kAdd, key, std::vector<char>(reinterpret_cast<char*>(&delta), reinterpret_cast<char*>(&delta) + 8), Millis(30000));
    int64_t sum = 0;
    if (r.size() == 8) std::memcpy(&sum, r.data(), 8);
    return sum;
  }
  void drain(Millis limit) override {
    if (!server_) return;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (fd_ >= 0) ::close(fd_);  // our own connection does not count
      fd_ = -1;
    }
    server_->drain(limit);
  }
  std::vector<int> goneRanks() override {
    auto r = request(kGone, "", {}, Millis(10000));
    std::vector<int> out(r.size() / 4);
    if (!out.empty()) std::memcpy(out.data(), r.data(), out.size() * 4);
    return out;
  }

 private:
  static int connectOnce(const std::string& host, int port, std::string* why) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (rc != 0) {
      *why = std::string("cannot resolve '") + host + "': " + gai_strerror(rc);
      return -1;
    }
    int fd = -1;
    for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
      fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
        *why = sysError("connect");
        ::close(fd);
        fd = -1;
      }
    }
    ::freeaddrinfo(res);
    if (fd >= 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
  }

  // One round trip; the socket's receive timeout bounds a server that stopped answering.
  std::vector<char> request(uint8_t op, const std::string& key, const std::vector<char>& value, Millis timeout,
                            uint8_t* statusOut = nullptr) {
    std::lock_guard<std::mutex> g(mu_);
    if (fd_ < 0) fail("E_DIST", "the rendezvous store connection is closed");
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t status = 0;
    std::vector<char> reply;
    if (!writeAll(fd_, &op, 1) || !writeBlob(fd_, key.data(), static_cast<uint32_t>(key.size())) ||
        !writeBlob(fd_, value.data(), static_cast<uint32_t>(value.size())) || !readAll(fd_, &status, 1) ||
        !readBlob(fd_, reply))
      fail("E_DIST", "the rendezvous store at " + where_ + " stopped answering: rank 0, which serves it, has exited or hangs");
    if (statusOut) *statusOut = status;
    return reply;
  }

  std::string where_;
  std::unique_ptr<Server> server_;
  int fd_ = -1;
  std::mutex mu_;
};

// --- file store ---

class FileStore : public Store {
 public:
  FileStore(const std::string& dir, Millis pollTimeout) : dir_(dir), timeout_(pollTimeout) {
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) fail("E_DIST", "the rendezvous folder '" + dir + "' is not a folder");
  }
  void set(const std::string& key, const std::vector<char>& value) override {
    std::string path = pathOf(key), tmp = path + ".tmp." + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && writeFile(fd, value) && ::fsync(fd) == 0;
    if (fd >= 0) ::close(fd);
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
      std::string msg = sysError("cannot write '" + path + "'");
      ::unlink(tmp.c_str());
      fail("E_DIST", msg);
    }
  }
  std::vector<char> get(const std::string& key, Millis timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<char> out;
    while (!readFile(pathOf(key), out)) {
      if (std::chrono::steady_clock::now() >= deadline)
        fail("E_DIST", "timed out after " + std::to_string(timeout.count()) + " ms waiting for '" + key + "' in " + dir_ + " (a rank did not arrive)");
      std::this_thread::sleep_for(Millis(10));
    }
    return out;
  }
  bool check(const std::string& key) override { return ::access(pathOf(key).c_str(), F_OK) == 0; }
  int64_t add(const std::string& key, int64_t delta) override {
    // flock on a lock file serializes the read-modify-write across processes.
    std::string lock = pathOf(key) + ".lock";
    int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) fail("E_DIST", sysError("cannot lock '" + lock + "'"));
    int64_t sum = 0;
    std::vector<char> cur;
    if (readFile(pathOf(key), cur) && cur.size() == 8) std::memcpy(&sum, cur.data(), 8);
    sum += delta;
    try {
      set(key, std::vector<char>(reinterpret_cast<char*>(&sum), reinterpret_cast<char*>(&sum) + 8));
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
    return sum;
  }

 private:
  // Keys become hex file names: any key is a safe, portable name.
  std::string pathOf(const std::string& key) const {
    static const char* hex = "0123456789abcdef";
    std::string name;
    for (unsigned char c : key) {
      name += hex[c >> 4];
      name += hex[c & 15];
    }
    return dir_ + "/" + name;
  }
  static bool writeFile(int fd, const std::vector<char>& v) {
    size_t off = 0;
    while (off < v.size()) {
      ssize_t w = ::write(fd, v.data() + off, v.size() - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      off += static_cast<size_t>(w);
    }
    return true;
  }
  static bool readFile(const std::string& path, std::vector<char>& out) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    out.clear();
    char buf[4096];
    ssize_t r;
    while ((r = ::read(fd, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + r);
    ::close(fd);
    return r == 0;
  }
  std::string dir_;
  Millis timeout_;
};

}  // namespace

std::unique_ptr<Store> tcpStore(const std::string& host, int port, int rank, bool serve, Millis timeout) {
  return std::make_unique<TcpStore>(host, port, rank, serve, timeout);
}

std::unique_ptr<Store> fileStore(const std::string& dir, Millis pollTimeout) {
  return std::make_unique<FileStore>(dir, pollTimeout);
}

}  // namespace mp::dist
