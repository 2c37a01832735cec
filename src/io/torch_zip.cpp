#include "instinct/io/torch_zip.h"

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
  auto [data, n] = storage_bytes(ref.storage);
  const size_t need = static_cast<size_t>(ref.storage_numel) * c10::elementSize(ref.dtype);
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
