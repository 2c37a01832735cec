#include "instinct/io/torch_zip.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "common/fault.h"
#include "instinct/common/error.h"
#include "io/printable.h"
#include "instinct/io/atomic_file.h"

namespace instinct::io {
namespace {

uint32_t crc32_update(uint32_t crc, const uint8_t* p, size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void put16(std::string& s, uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); }
void put32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void put64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }

constexpr uint64_t kMax32 = 0xFFFFFFFFu;
constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;  // 1980-01-01, fixed for reproducible bytes

// One entry of a zip's central directory.
struct ZipEntry {
  uint16_t method = 0;
  uint64_t comp = 0, size = 0, offset = 0;
};

uint16_t get16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t get32(const uint8_t* p) { return uint32_t(get16(p)) | uint32_t(get16(p + 2)) << 16; }
uint64_t get64(const uint8_t* p) { return uint64_t(get32(p)) | uint64_t(get32(p + 4)) << 32; }

// The central directory of the zip at `path` (`file_size` bytes), read the way miniz reads it, with
// what a torch.save file never holds refused: names that are absolute, have a `..` component or
// occur twice, sizes or offsets past the data, compression other than stored or deflate, or a
// deflated size beyond what deflate can expand to. Records in the directory's order.
std::vector<std::pair<std::string, ZipEntry>> zip_listing(const std::string& path, uint64_t file_size) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  INSTINCT_CHECK(f, path, ": cannot open: ", std::strerror(errno));
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> closer(f, std::fclose);
  auto read_at = [&](uint64_t at, uint64_t n, const char* what) {
    std::string b(n, '\0');
    INSTINCT_CHECK(at <= file_size && n <= file_size - at && ::fseeko(f, off_t(at), SEEK_SET) == 0 &&
                       std::fread(b.data(), 1, n, f) == n,
                   path, ": truncated or corrupt zip archive (", what, " at byte ", at, " of ", file_size,
                   "); expected a complete torch.save file");
    return b;
  };
  auto corrupt = [&](const std::string& what) {
    fail(path, ": truncated or corrupt zip archive (", what, "); expected a complete torch.save file");
  };
  // End of central directory: the last signature within the final 64 KiB + 22 bytes.
  const uint64_t tail_n = std::min<uint64_t>(file_size, 65557);
  const std::string tail = read_at(file_size - tail_n, tail_n, "end of central directory");
  const auto* t = reinterpret_cast<const uint8_t*>(tail.data());
  int64_t e = int64_t(tail_n) - 22;
  while (e >= 0 && get32(t + e) != 0x06054b50) --e;
  if (e < 0) corrupt("no end of central directory record");
  const uint64_t eocd = file_size - tail_n + uint64_t(e);
  uint64_t count = get16(t + e + 10), cd_size = get32(t + e + 12), cd_at = get32(t + e + 16);
  // miniz takes the zip64 record whenever its locator precedes the end record: so must we, or the
  // checks below would vet a different directory than the one PyTorchStreamReader reads.
  const bool locator =
      eocd >= 20 && get32(reinterpret_cast<const uint8_t*>(read_at(eocd - 20, 4, "zip64 locator").data())) == 0x07064b50;
  if (locator || count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_at == 0xFFFFFFFFu) {
    if (eocd < 20) corrupt("zip64 locator missing");
    const std::string loc = read_at(eocd - 20, 20, "zip64 locator");
    const auto* l = reinterpret_cast<const uint8_t*>(loc.data());
    if (get32(l) != 0x07064b50) corrupt("zip64 locator missing");
    const uint64_t rec_at = get64(l + 8);
    const std::string rec = read_at(rec_at, 56, "zip64 end of central directory");
    const auto* r = reinterpret_cast<const uint8_t*>(rec.data());
    if (get32(r) != 0x06064b50) corrupt("bad zip64 end of central directory record");
    count = get64(r + 32), cd_size = get64(r + 40), cd_at = get64(r + 48);
  }
  if (cd_at > eocd || cd_size > eocd - cd_at || count > cd_size / 46)
    corrupt("central directory of " + std::to_string(count) + " entries, " + std::to_string(cd_size) + " bytes at byte " +
            std::to_string(cd_at) + " does not fit before byte " + std::to_string(eocd));
  const std::string cd = read_at(cd_at, cd_size, "central directory");
  const auto* c = reinterpret_cast<const uint8_t*>(cd.data());
  std::vector<std::pair<std::string, ZipEntry>> out;
  std::unordered_map<std::string, int> seen;
  uint64_t p = 0;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_size - p < 46 || get32(c + p) != 0x02014b50) corrupt("central directory entry " + std::to_string(i) + " is damaged");
    const uint64_t name_n = get16(c + p + 28), extra_n = get16(c + p + 30), comment_n = get16(c + p + 32);
    if (cd_size - p - 46 < name_n + extra_n + comment_n) corrupt("central directory entry " + std::to_string(i) + " is damaged");
    const std::string name(reinterpret_cast<const char*>(c + p + 46), name_n);
    ZipEntry z;
    z.method = get16(c + p + 10);
    z.comp = get32(c + p + 20), z.size = get32(c + p + 24), z.offset = get32(c + p + 42);
    for (uint64_t x = p + 46 + name_n; x + 4 <= p + 46 + name_n + extra_n;) {  // zip64 extra field
      const uint16_t id = get16(c + x), n = get16(c + x + 2);
      if (x + 4 + n > p + 46 + name_n + extra_n) corrupt("extra field of entry '" + printable(name) + "' is damaged");
      if (id == 0x0001) {
        uint64_t y = x + 4;
        auto field = [&](uint64_t& v) {
          if (v != 0xFFFFFFFFu) return;
          if (y + 8 > x + 4 + n) corrupt("zip64 field of entry '" + printable(name) + "' is damaged");
          v = get64(c + y), y += 8;
        };
        field(z.size), field(z.comp), field(z.offset);
      }
      x += 4 + n;
    }
    p += 46 + name_n + extra_n + comment_n;
    auto refuse = [&](const std::string& why) {
      fail(path, ": zip entry '", printable(name), "' ", why, "; refusing the file");
    };
    if (name.empty() || name[0] == '/' || name[0] == '\\' || (name.size() > 1 && name[1] == ':'))
      refuse("has an absolute or empty name; expected relative names as torch.save writes them");
    for (size_t a = 0; a <= name.size();) {
      size_t b = name.find_first_of("/\\", a);
      if (b == std::string::npos) b = name.size();
      if (name.compare(a, b - a, "..") == 0) refuse("has a '..' component; expected names inside the archive's directory");
      a = b + 1;
    }
    if (!seen.emplace(name, 1).second) refuse("occurs twice; a torch.save archive names each record once");
    if (z.method != 0 && z.method != 8)
      refuse("uses compression method " + std::to_string(z.method) + "; expected stored (0) records as torch.save writes");
    const bool fits = z.offset <= cd_at && z.comp <= cd_at - z.offset && 30 + name_n <= cd_at - z.offset - z.comp;
    if (!fits || (z.method == 0 && z.comp != z.size) || (z.method == 8 && z.size / 1032 > z.comp + 1))
      refuse("claims " + std::to_string(z.size) + " bytes (" + std::to_string(z.comp) + " in the file at byte " +
             std::to_string(z.offset) + ") that the file's " + std::to_string(file_size) + " bytes cannot hold");
    out.emplace_back(name, z);
  }
  return out;
}

}  // namespace

TensorList load_tensor_dict(const LazyArchive& src, const PyPtr& dict, const std::string& what) {
  INSTINCT_CHECK(dict && dict->is_dict(), what, ": is a ", dict ? dict->type_name() : "missing value",
                 ", expected a dict of name -> tensor");
  TensorList out;
  std::unordered_map<std::string, int> seen;
  for (const auto& [k, v] : dict->dict) {
    INSTINCT_CHECK(k->is_str(), what, ": has a key of type ", k->type_name(), ", expected string keys");
    INSTINCT_CHECK(seen.emplace(k->s, 1).second, what, ": key '", k->s, "' occurs twice; the file is malformed");
    INSTINCT_CHECK(v->is_tensor(), what, ": value of key '", k->s, "' is a ", v->type_name(), ", expected a tensor");
    out.emplace_back(k->s, src.load(v->tensor));
  }
  return out;
}

// ---- LazyArchive ----

LazyArchive::LazyArchive(const std::string& path) : path_(path) {
  struct stat st {};
  INSTINCT_CHECK(::stat(path.c_str(), &st) == 0, path, ": cannot open: ", std::strerror(errno));
  INSTINCT_CHECK(!S_ISDIR(st.st_mode), path, ": is a directory, expected a torch.save file");
  {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    INSTINCT_CHECK(f, path, ": cannot open: ", std::strerror(errno));
    unsigned char head[4] = {0, 0, 0, 0};
    const size_t got = std::fread(head, 1, 4, f);
    std::fclose(f);
    INSTINCT_CHECK(got == 0 || head[0] != 0x80, path, ": legacy (pre-1.6) torch.save format or a plain pickle, not a "
                   "zip archive; re-save it with torch >= 1.6: torch.save(torch.load(path), path)");
    INSTINCT_CHECK(got > 0, path, ": file is empty, expected a torch.save zip archive");
    INSTINCT_CHECK(got == 4 && head[0] == 'P' && head[1] == 'K', path,
                   ": not a torch.save file (no zip signature); expected a zip archive written by torch.save");
  }
  const auto listing = zip_listing(path, uint64_t(st.st_size));
  INSTINCT_CHECK(!listing.empty(), path, ": zip archive has no entries; expected a file written by torch.save");
  try {
    reader_ = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const std::exception& e) {
    fail(path, ": truncated or corrupt zip archive (", error_text(e), "); expected a complete torch.save file");
  }
  if (!reader_->hasRecord("data.pkl")) {
    const bool script = reader_->hasRecord("constants.pkl") || reader_->hasRecord("code/__torch__.py");
    fail(path, script ? ": is a TorchScript archive (torch.jit.save); expected a torch.save file"
                      : ": zip archive has no data.pkl; expected a file written by torch.save");
  }
  std::tuple<at::DataPtr, size_t> rec;
  try {
    rec = reader_->getRecord("data.pkl");
  } catch (const std::exception& e) {
    fail(path, ": corrupt archive, cannot read data.pkl (", error_text(e), ")");
  }
  root_ = unpickle(std::get<0>(rec).get(), std::get<1>(rec), path_);
  // Every storage record is there and holds what its storage claims (before anything is loaded).
  // Record names are "<first entry's directory>/data/<key>", as PyTorchStreamReader looks them up.
  const std::string& first = listing.front().first;
  const std::string prefix = first.substr(0, first.find('/') + 1) + "data/";
  std::unordered_map<std::string, uint64_t> sizes;
  for (const auto& [name, z] : listing) sizes.emplace(name, z.size);
  std::vector<const PyValue*> todo = {root_.get()};
  std::unordered_set<const PyValue*> seen;
  while (!todo.empty()) {
    const PyValue* v = todo.back();
    todo.pop_back();
    if (!seen.insert(v).second) continue;
    for (const auto& x : v->items) todo.push_back(x.get());
    for (const auto& [k, x] : v->dict) todo.push_back(k.get()), todo.push_back(x.get());
    if (!v->is_tensor()) continue;
    const TensorRef& r = v->tensor;
    auto it = sizes.find(prefix + r.storage);
    INSTINCT_CHECK(it != sizes.end(), path_, ": storage record '", printable(prefix + r.storage),
                   "' is missing; the archive is corrupt");
    const uint64_t need = uint64_t(r.storage_numel) * c10::elementSize(r.dtype);  // < 2^63: unpickle() checked
    INSTINCT_CHECK(it->second >= need, path_, ": storage '", printable(r.storage), "' claims ", r.storage_numel, " x ",
                   c10::toString(r.dtype), " = ", need, " bytes, but its record holds ", it->second,
                   " bytes; the archive is corrupt");
  }
}

LazyArchive::~LazyArchive() = default;

std::pair<std::shared_ptr<void>, size_t> LazyArchive::storage_bytes(const std::string& key) const {
  const std::string name = "data/" + key;
  INSTINCT_CHECK(reader_->hasRecord(name), path_, ": storage record '", name, "' is missing; the archive is corrupt");
  try {
    auto rec = reader_->getRecord(name);
    auto holder = std::make_shared<at::DataPtr>(std::move(std::get<0>(rec)));
    return {std::shared_ptr<void>(holder, holder->get()), std::get<1>(rec)};
  } catch (const std::exception& e) {
    fail(path_, ": cannot read storage record '", name, "' (", error_text(e), "); the archive is corrupt");
  }
}

at::Tensor LazyArchive::load(const TensorRef& ref) const {
  size_t need = 0;
  INSTINCT_CHECK(ref.storage_numel >= 0 && !__builtin_mul_overflow(size_t(ref.storage_numel), c10::elementSize(ref.dtype), &need),
                 path_, ": storage '", printable(ref.storage), "' claims ", ref.storage_numel, " elements; the archive is corrupt");
  auto [data, n] = storage_bytes(ref.storage);
  INSTINCT_CHECK(n >= need, path_, ": storage record '", ref.storage, "' has ", n, " bytes, expected ", need,
                 "; the archive is corrupt");
  auto storage = at::empty({ref.storage_numel}, at::TensorOptions().dtype(ref.dtype));
  if (need) std::memcpy(storage.data_ptr(), data.get(), need);
  return storage.as_strided(ref.sizes, ref.strides, ref.offset);
}

// ---- ArchiveWriter ----

ArchiveWriter::ArchiveWriter(const std::string& path, uint64_t zip64_from)
    : path_(path), zip64_from_(std::min<uint64_t>(zip64_from, kMax32)) {
  file_ = std::make_unique<AtomicFile>(path);
  out_ = std::fopen(file_->temp_path().c_str(), "wb");
  INSTINCT_CHECK(out_, path, ": cannot create '", file_->temp_path(), "': ", std::strerror(errno));
  static const char kByteorder[] = "little";
  write_record("archive/byteorder", kByteorder, 6);
}

ArchiveWriter::~ArchiveWriter() {
  if (out_) std::fclose(out_);  // the AtomicFile removes the temp file unless committed
}

void ArchiveWriter::write_raw(const void* data, size_t size) {
  if (size && std::fwrite(data, 1, size, out_) != size)
    fail(path_, ": writing '", file_->temp_path(), "' failed: ", std::strerror(errno), " (disk full?)");
  offset_ += size;
}

void ArchiveWriter::write_record(const std::string& name, const void* data, size_t size) {
  INSTINCT_CHECK(!finished_, path_, ": record written after finish()");
  const uint32_t crc = crc32_update(0, static_cast<const uint8_t*>(data), size);
  const bool z64 = size >= zip64_from_;
  // Local header (30 bytes + name + extra); the data starts on a 64-byte boundary like torch's writer.
  std::string extra;
  if (z64) {
    put16(extra, 0x0001);
    put16(extra, 16);
    put64(extra, size);
    put64(extra, size);
  }
  const uint64_t unpadded = offset_ + 30 + name.size() + extra.size() + 4;
  const uint64_t pad = (64 - unpadded % 64) % 64;
  put16(extra, 0x4246);  // "FB": padding, as PyTorchStreamWriter does
  put16(extra, static_cast<uint16_t>(pad));
  extra.append(pad, 'Z');
  std::string h;
  put32(h, 0x04034b50);
  put16(h, z64 ? 45 : 20);
  put16(h, 0);  // flags
  put16(h, 0);  // stored
  put16(h, 0);  // time
  put16(h, kDosDate);
  put32(h, crc);
  put32(h, z64 ? uint32_t(kMax32) : uint32_t(size));
  put32(h, z64 ? uint32_t(kMax32) : uint32_t(size));
  put16(h, static_cast<uint16_t>(name.size()));
  put16(h, static_cast<uint16_t>(extra.size()));
  h += name;
  h += extra;
  entries_.push_back({name, offset_, size, crc});
  write_raw(h.data(), h.size());
  write_raw(data, size);
  std::fflush(out_);
  fault_point("archive.record");
}

PyPtr ArchiveWriter::add_tensor(const at::Tensor& t_in) {
  at::Tensor t = t_in.detach().to(at::kCPU).resolve_conj().resolve_neg().contiguous();
  TensorRef r;
  r.storage = std::to_string(next_key_++);
  r.dtype = t.scalar_type();
  r.storage_numel = t.numel();
  r.sizes = t.sizes().vec();
  r.strides = t.strides().vec();
  write_record("archive/data/" + r.storage, t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  return PyValue::make_tensor(std::move(r));
}

PyPtr ArchiveWriter::copy_tensor(const LazyArchive& src, const TensorRef& ref) {
  auto key = std::make_pair(&src, ref.storage);
  auto it = copied_.find(key);
  if (it == copied_.end()) {
    auto [data, n] = src.storage_bytes(ref.storage);
    const size_t need = static_cast<size_t>(ref.storage_numel) * c10::elementSize(ref.dtype);
    INSTINCT_CHECK(n >= need, src.path(), ": storage record '", ref.storage, "' has ", n, " bytes, expected ", need,
                   "; the archive is corrupt");
    const std::string out_key = std::to_string(next_key_++);
    write_record("archive/data/" + out_key, data.get(), n);
    it = copied_.emplace(key, out_key).first;
  }
  TensorRef r = ref;
  r.storage = it->second;
  r.location = "cpu";  // loads without map_location on any machine
  return PyValue::make_tensor(std::move(r));
}

void ArchiveWriter::finish(const PyPtr& root) {
  const std::string pkl = pickle_object(root);
  write_record("archive/data.pkl", pkl.data(), pkl.size());
  write_record("archive/version", "3\n", 2);
  // Central directory.
  const uint64_t cd_start = offset_;
  for (const auto& e : entries_) {
    std::string extra;
    const bool zs = e.size >= zip64_from_, zo = e.offset >= zip64_from_;
    if (zs || zo) {
      put16(extra, 0x0001);
      put16(extra, static_cast<uint16_t>((zs ? 16 : 0) + (zo ? 8 : 0)));
      if (zs) {
        put64(extra, e.size);
        put64(extra, e.size);
      }
      if (zo) put64(extra, e.offset);
    }
    std::string h;
    put32(h, 0x02014b50);
    put16(h, (zs || zo) ? 45 : 20);  // version made by
    put16(h, (zs || zo) ? 45 : 20);  // version needed
    put16(h, 0);
    put16(h, 0);
    put16(h, 0);
    put16(h, kDosDate);
    put32(h, e.crc);
    put32(h, zs ? uint32_t(kMax32) : uint32_t(e.size));
    put32(h, zs ? uint32_t(kMax32) : uint32_t(e.size));
    put16(h, static_cast<uint16_t>(e.name.size()));
    put16(h, static_cast<uint16_t>(extra.size()));
    put16(h, 0);  // comment
    put16(h, 0);  // disk
    put16(h, 0);  // internal attributes
    put32(h, 0);  // external attributes
    put32(h, zo ? uint32_t(kMax32) : uint32_t(e.offset));
    h += e.name;
    h += extra;
    write_raw(h.data(), h.size());
  }
  const uint64_t cd_size = offset_ - cd_start, count = entries_.size();
  const bool z64 = cd_start >= zip64_from_ || cd_size >= zip64_from_ || count >= 0xFFFF;
  std::string end;
  if (z64) {
    const uint64_t rec_at = offset_;
    put32(end, 0x06064b50);
    put64(end, 44);
    put16(end, 45);
    put16(end, 45);
    put32(end, 0);
    put32(end, 0);
    put64(end, count);
    put64(end, count);
    put64(end, cd_size);
    put64(end, cd_start);
    put32(end, 0x07064b50);  // locator
    put32(end, 0);
    put64(end, rec_at);
    put32(end, 1);
  }
  put32(end, 0x06054b50);
  put16(end, 0);
  put16(end, 0);
  put16(end, z64 ? 0xFFFF : static_cast<uint16_t>(count));
  put16(end, z64 ? 0xFFFF : static_cast<uint16_t>(count));
  put32(end, z64 ? uint32_t(kMax32) : uint32_t(cd_size));
  put32(end, z64 ? uint32_t(kMax32) : uint32_t(cd_start));
  put16(end, 0);
  write_raw(end.data(), end.size());
  finished_ = true;
  const int rc = std::fclose(out_);
  out_ = nullptr;
  INSTINCT_CHECK(rc == 0, path_, ": closing '", file_->temp_path(), "' failed: ", std::strerror(errno), " (disk full?)");
  file_->commit();
}

}  // namespace instinct::io
