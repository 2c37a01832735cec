// A torch.save archive read as io::load_object (LazyArchive + every tensor built) and
// io::load_tensor_dict. First input byte: 'Z' = the rest is the file itself (zip container
// checks); anything else = the rest is records separated by "\n@@@@\n": data.pkl, then storage
// records data/0, data/1, ..., which the harness packs into a well-formed stored zip (valid CRCs)
// so that mutations reach the pickle and tensor-layout checks.
#include <cstring>

#include "fuzz_common.h"
#include "instinct/io/archive.h"
#include "instinct/io/torch_zip.h"

namespace {

uint32_t crc32(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return ~c;
}

void put(std::string& s, uint32_t v, int n) {
  for (int k = 0; k < n; ++k) s += static_cast<char>(v >> (8 * k));
}

std::string stored_zip(const std::vector<std::pair<std::string, std::string>>& records) {
  std::string out, cd;
  for (const auto& [name, data] : records) {
    const uint32_t off = static_cast<uint32_t>(out.size()), crc = crc32(data);
    const uint32_t n = static_cast<uint32_t>(data.size());
    put(out, 0x04034b50, 4), put(out, 20, 2), put(out, 0, 2), put(out, 0, 2), put(out, 0, 4);
    put(out, crc, 4), put(out, n, 4), put(out, n, 4), put(out, uint32_t(name.size()), 2), put(out, 0, 2);
    out += name;
    out += data;
    put(cd, 0x02014b50, 4), put(cd, 20, 2), put(cd, 20, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 4);
    put(cd, crc, 4), put(cd, n, 4), put(cd, n, 4), put(cd, uint32_t(name.size()), 2), put(cd, 0, 2);
    put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 4), put(cd, off, 4);
    cd += name;
  }
  const uint32_t cd_at = static_cast<uint32_t>(out.size());
  out += cd;
  put(out, 0x06054b50, 4), put(out, 0, 2), put(out, 0, 2), put(out, uint32_t(records.size()), 2);
  put(out, uint32_t(records.size()), 2), put(out, uint32_t(cd.size()), 4), put(out, cd_at, 4), put(out, 0, 2);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string file = body;
  if (data[0] != 'Z') {
    static const std::string sep = "\n@@@@\n";
    std::vector<std::pair<std::string, std::string>> records;
    size_t p = 0;
    for (int k = -1; p <= body.size(); ++k) {
      size_t e = body.find(sep, p);
      if (e == std::string::npos) e = body.size();
      records.emplace_back(k < 0 ? "archive/data.pkl" : "archive/data/" + std::to_string(k), body.substr(p, e - p));
      p = e + sep.size();
    }
    records.emplace_back("archive/version", "3\n");
    file = stored_zip(records);
  }
  const std::string path = fuzz::write_file("input.pt", file.data(), file.size());
  fuzz::guarded([&] { (void)instinct::io::load_object(path); });
  fuzz::guarded([&] {
    instinct::io::LazyArchive a(path);
    if (a.root()->is_dict())
      for (const auto& [k, v] : a.root()->dict)
        if (v->is_dict()) (void)instinct::io::load_tensor_dict(a, v, "fuzz");
    if (a.root()->is_dict()) (void)instinct::io::load_tensor_dict(a, a.root(), "fuzz");
  });
  return 0;
}
