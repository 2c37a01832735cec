#include "instinct/distill/concept.h"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "instinct/common/error.h"
#include "common/random.h"
#include "compat.h"
#include "instinct/config/config.h"
#include "instinct/distill/feature_loss.h"
#include "instinct/teacher/bundle.h"
#include "instinct/teacher/phrases.h"

namespace instinct::distill {
using json = nlohmann::json;

namespace {

// Grounding outputs for P pairs with logits/presence squeezed: logits (P,Q), presence (P).
struct Ground {
  at::Tensor logits, boxes, masks, presence, memory, queries;
  at::Tensor scores() const { return torch::sigmoid(logits) * torch::sigmoid(presence).unsqueeze(1); }
};

struct Fpn {
  at::Tensor f0, f1, f2;
};

Ground ground(const teacher::TeacherBundle& b, const Fpn& fpn, const at::Tensor& image_idx, const at::Tensor& text,
              const at::Tensor& pad) {
  auto g = b.grounding(fpn.f0.index_select(0, image_idx), fpn.f1.index_select(0, image_idx),
                       fpn.f2.index_select(0, image_idx), text, pad);
  return {g.logits.squeeze(-1).to(torch::kFloat), g.boxes.to(torch::kFloat), g.masks, g.presence.reshape({-1}).to(torch::kFloat),
          g.memory, g.queries};
}

// One (image, concept) prompt of a batch.
struct Pair {
  int64_t image;    // row in the batch
  int64_t concept;  // index into the vocabulary
  bool positive;
};

// The teacher's targets for a set of pairs: kept queries per pair.
struct Targets {
  Ground all;                                   // every query (no grad)
  std::vector<at::Tensor> boxes, masks, logits;  // per pair, kept queries only
  int64_t kept = 0;
};

Targets make_targets(Ground g, double tau_keep) {
  Targets t;
  auto keep = (g.scores() >= tau_keep);
  for (int64_t p = 0; p < g.logits.size(0); ++p) {
    auto idx = keep[p].nonzero().squeeze(1);
    t.boxes.push_back(g.boxes[p].index_select(0, idx));
    t.masks.push_back(g.masks[p].index_select(0, idx));
    t.logits.push_back(g.logits[p].index_select(0, idx));
    t.kept += idx.size(0);
  }
  t.all = std::move(g);
  return t;
}

// Box IoU of matched xyxy boxes (N,4) -> (N,).
at::Tensor box_iou_paired(const at::Tensor& a, const at::Tensor& b) {
  auto lt = torch::max(a.narrow(1, 0, 2), b.narrow(1, 0, 2)), rb = torch::min(a.narrow(1, 2, 2), b.narrow(1, 2, 2));
  auto wh = (rb - lt).clamp_min(0);
  auto inter = wh.select(1, 0) * wh.select(1, 1);
  auto area = [](const at::Tensor& x) { return (x.select(1, 2) - x.select(1, 0)).clamp_min(0) * (x.select(1, 3) - x.select(1, 1)).clamp_min(0); };
  return inter / (area(a) + area(b) - inter).clamp_min(1e-12);
}

double mask_iou(const at::Tensor& a, const at::Tensor& b) {  // bool masks
  const double u = (a | b).sum().item<double>();
  return u > 0 ? (a & b).sum().item<double>() / u : 1.0;
}

class ConceptRecipe : public Recipe {
 public:
  explicit ConceptRecipe(const ConceptConfig& cfg) : cfg_(cfg), L(cfg_.loss) {}
  std::string name() const override { return "concept"; }
  TrainerConfig& config() override { return cfg_; }
  std::string config_yaml() const override { return config::to_yaml(cfg_); }

  data::PreprocessConfig setup(TrainContext& ctx) override {
    INSTINCT_CHECK(L.mask_kind == "bce" || L.mask_kind == "focal", "loss.mask_kind '", L.mask_kind, "' is unknown; valid: bce, focal");
    INSTINCT_CHECK(cfg_.concepts.positives >= 0 && cfg_.concepts.min_negatives >= 0 && cfg_.concepts.negative_ratio >= 0,
                   "concepts.positives, concepts.min_negatives and concepts.negative_ratio must be >= 0");
    INSTINCT_CHECK(L.temperature > 0, "loss.temperature = ", L.temperature, ": expected > 0");
    mcfg_.kind = L.mask_kind == "focal" ? MaskLossKind::focal : MaskLossKind::bce;
    mcfg_.num_points = L.mask_points;
    kcfg_.temperature = L.temperature;
    kcfg_.w_unmatched = L.w_unmatched;
    ccfg_.alpha = L.clock_alpha;
    ccfg_.beta = L.clock_beta;
    INSTINCT_CHECK(!cfg_.teacher.bundle.empty(), "teacher.bundle must name a teacher bundle directory");
    const auto& dev = ctx.run.device;
    // Teacher bundle (trunk, detector neck, grounding, phrases: concept bank or text encoder).
    auto load = [&](const std::string& dir, std::vector<std::string> modules, bool phrases) {
      if (phrases) {
        auto m = teacher::phrase_modules(teacher::read_bundle_info(dir));
        if (m.empty()) m = {"concept_bank"};  // load() then names what is missing
        modules.insert(modules.end(), m.begin(), m.end());
      }
      teacher::BundleLoadOptions bo;
      bo.modules = modules;
      bo.verify_hashes = cfg_.teacher.verify_hashes;
      bo.device = dev;  // load (and shape-check) where it runs: traced constants follow the load device
      return std::make_unique<teacher::TeacherBundle>(teacher::TeacherBundle::load(dir, bo));
    };
    teacher_ = load(cfg_.teacher.bundle, {"trunk", "detector_neck", "grounding"}, true);
    const auto& tinfo = teacher_->info();
    if (!cfg_.student_concepts.empty()) sbank_ = load(cfg_.student_concepts, {}, true);
    if (cfg_.train_neck) {  // the student's detector neck: a trainable copy of the teacher's
      sneck_ = load(cfg_.teacher.bundle, {"detector_neck"}, false);
      for (auto& [name, p] : sneck_->named_parameters("detector_neck")) p.requires_grad_(true);
    }
    // Vocabulary: names -> prompt tokens for the teacher and for the student (rows = vocabulary ids).
    vocab_ = cfg_.concepts.vocabulary;
    if (!cfg_.concepts.vocabulary_file.empty())
      for (auto& p : teacher::read_vocabulary(cfg_.concepts.vocabulary_file))
        if (std::find(vocab_.begin(), vocab_.end(), p) == vocab_.end()) vocab_.push_back(std::move(p));
    if (vocab_.empty()) vocab_ = tinfo.concepts;
    INSTINCT_CHECK(!vocab_.empty(), "concepts.vocabulary is empty and the teacher bundle lists no concepts");
    t_phr_ = teacher::encode_phrases(*teacher_, vocab_, dev, "concepts.vocabulary: concept");
    s_phr_ = sbank_ ? teacher::encode_phrases(*sbank_, vocab_, dev,
                                              "concepts.vocabulary (student bank " + cfg_.student_concepts + "): concept")
                    : t_phr_;
    if (t_phr_.from_encoder > 0)
      spdlog::info("vocabulary: {} concepts from the concept bank, {} encoded by the teacher's text encoder", t_phr_.from_bank,
                   t_phr_.from_encoder);
    INSTINCT_CHECK(s_phr_.text.size(2) == tinfo.neck_channels, "student concept bank (",
                   cfg_.student_concepts.empty() ? cfg_.teacher.bundle : cfg_.student_concepts, ") gives text of width ",
                   s_phr_.text.size(2), " but the grounding module expects ", tinfo.neck_channels);
    full_scan_.resize(vocab_.size());
    std::iota(full_scan_.begin(), full_scan_.end(), 0);
    resolve_student_shape(cfg_.student, tinfo);
    INSTINCT_CHECK(cfg_.student.out_grid == tinfo.trunk_grid && cfg_.student.out_channels == tinfo.trunk_channels,
                   "student output ", cfg_.student.out_channels, "x", cfg_.student.out_grid, "x", cfg_.student.out_grid,
                   " must match the teacher trunk ", tinfo.trunk_channels, "x", tinfo.trunk_grid, "x", tinfo.trunk_grid,
                   " to feed its neck");
    if (ctx.run.resume_from.empty() && cfg_.init.from == "random")
      spdlog::warn("init.from is random: concept distillation normally starts from a Stage A trunk (init.from=instinct init.path=...)");
    spdlog::info("teacher {}: vocabulary {} concepts, {} queries", tinfo.name, vocab_.size(), tinfo.num_queries);
    return teacher::preprocess_config(tinfo, cfg_.data.resize);
  }

  // Region-text projection of the student's query embeddings (a training aid, not part of the released
  // trunk): identity-initialised; and the fine-tuned neck's parameters with train_neck.
  std::vector<std::pair<std::string, at::Tensor>> heads(TrainContext& ctx) override {
    const int64_t c = teacher_->info().neck_channels;
    align_proj_ = torch::nn::Linear(c, c);
    {
      torch::NoGradGuard ng;
      align_proj_->weight.copy_(torch::eye(c));
      align_proj_->bias.zero_();
    }
    align_proj_->to(ctx.run.device);
    std::vector<std::pair<std::string, at::Tensor>> h;
    if (L.w_align > 0) h = {{"align_proj.weight", align_proj_->weight}, {"align_proj.bias", align_proj_->bias}};
    if (sneck_)
      for (auto& [name, p] : sneck_->named_parameters("detector_neck")) h.emplace_back("detector_neck." + name, p);
    return h;
  }

  // Held-out set: images, fixed pairs (every present concept + one absent one per image).
  void prepare(TrainContext& ctx) override {
    auto el = ctx.held_out_loader();
    uint64_t rng{uint64_t(cfg_.seed) ^ 0xe7a1ULL};
    int64_t n_pos = 0, n_pairs = 0;
    while (auto b = el->next()) {
      auto images = b->images.to(ctx.run.device);
      at::Tensor feats;
      auto fpn = teacher_fpn(ctx, images, &feats);
      auto scanned = scan_ground(ctx, fpn, images.size(0), full_scan_);
      auto top = top_scores(scanned, images.size(0), int64_t(full_scan_.size()));
      std::vector<Pair> pairs;
      for (int64_t i = 0; i < top.size(0); ++i) {
        std::vector<int64_t> neg;
        for (size_t k = 0; k < vocab_.size(); ++k) {
          if (top[i][int64_t(k)].item<double>() >= cfg_.concepts.positive_threshold) pairs.push_back({i, int64_t(k), true});
          else neg.push_back(int64_t(k));
        }
        portable_shuffle(neg, rng);
        if (!neg.empty()) pairs.push_back({i, neg[0], false});
      }
      if (pairs.empty()) continue;
      auto t = scan_targets(std::move(scanned), pairs, full_scan_);
      for (auto* v : {&t.boxes, &t.masks, &t.logits})
        for (auto& x : *v) x = x.cpu();
      t.all = Ground{t.all.logits.cpu(), t.all.boxes.cpu(), at::Tensor(), t.all.presence.cpu(), at::Tensor(), at::Tensor()};
      for (const auto& p : pairs) n_pos += p.positive;
      n_pairs += int64_t(pairs.size());
      evset_.push_back({b->images, pairs, std::move(t), feats.cpu().to(torch::kHalf)});
    }
    INSTINCT_CHECK(!evset_.empty(), "held-out set gives no concept pairs (every image unreadable?)");
    spdlog::info("held-out: {} images, {} concept pairs ({} present per the teacher)", ctx.eval_set->size(), n_pairs, n_pos);
  }

  std::optional<StepLoss> loss(TrainContext& ctx, const data::Batch& batch, PhaseTimer& timer) override {
    const auto& images = batch.images;
    const auto& dev = ctx.run.device;
    const int64_t B = images.size(0);
    // Concept sampling from the teacher's view of the vocabulary (deterministic in seed, epoch, batch).
    uint64_t rng{uint64_t(cfg_.seed) * 0x100000001b3ULL ^ uint64_t(batch.epoch) << 32 ^ uint64_t(batch.batch_index)};
    at::Tensor tfeat;
    auto tfpn = teacher_fpn(ctx, images, L.w_trunk > 0 ? &tfeat : nullptr);
    std::vector<int64_t> scan = full_scan_;
    if (cfg_.concepts.scan > 0 && size_t(cfg_.concepts.scan) < scan.size()) {
      portable_shuffle(scan, rng);
      scan.resize(size_t(cfg_.concepts.scan));
      std::sort(scan.begin(), scan.end());
    }
    auto scanned = scan_ground(ctx, tfpn, B, scan);
    auto pairs = pick_pairs(top_scores(scanned, B, int64_t(scan.size())), scan, rng);
    if (pairs.empty()) return std::nullopt;  // e.g. positives: 0 and min_negatives: 0 on images without present concepts
    auto [img, con] = pair_tensors(ctx, pairs);
    auto tg = scan_targets(std::move(scanned), pairs, scan);
    timer.lap("teacher");

    std::map<std::string, at::Tensor> l;
    {
      compat::CudaAutocast ac(ctx.run.autocast);
      at::Tensor sfeat;
      auto sfpn = student_fpn(*ctx.student, images, L.w_trunk > 0 ? &sfeat : nullptr);
      auto [text, pad] = text_of(s_phr_, con);
      auto s = ground(*teacher_, sfpn, img, text, pad);
      timer.lap("student_forward");
      auto matches = hungarian_match_batch(s.logits, s.boxes, tg.boxes, L.match);
      timer.lap("matching");
      auto zero = [&] { return torch::zeros({}, images.options()); };
      l["class"] = class_kd_loss(s.logits, tg.logits, tg.all.presence, matches, kcfg_);
      l["presence"] = presence_kd_loss(s.presence, tg.all.presence, L.temperature);
      auto bl = box_loss(s.boxes, tg.boxes, matches);
      l["l1"] = bl.l1;
      l["giou"] = bl.giou;
      auto ml = mask_loss(s.masks, tg.masks, matches, mcfg_);
      l["mask"] = ml.mask;
      l["dice"] = ml.dice;
      l["memory"] = L.w_memory > 0 ? clock_memory_loss(s.memory, tg.all.memory, tg.boxes, ccfg_) : zero();
      l["align"] = L.w_align > 0 ? align_loss(dev, pairs, s, matches) : zero();
      l["trunk"] = L.w_trunk > 0 ? feature_loss(sfeat, tfeat, {}, FeatureLossConfig{}).total : zero();
    }
    const std::map<std::string, double> w{{"class", L.w_class}, {"presence", L.w_presence}, {"l1", L.w_l1},
                                          {"giou", L.w_giou}, {"mask", L.w_mask}, {"dice", L.w_dice},
                                          {"memory", L.w_memory}, {"align", L.w_align}, {"trunk", L.w_trunk}};
    StepLoss out{torch::zeros({}, torch::TensorOptions().device(dev)), {}};
    for (const char* k : {"class", "presence", "l1", "giou", "mask", "dice", "memory", "align", "trunk"}) {
      out.total = out.total + w.at(k) * l[k].to(torch::kFloat);
      out.terms.emplace_back(std::string("loss_") + k, l[k].detach().to(torch::kFloat));
    }
    timer.lap("losses");
    for (const auto& p : pairs) win_pos_ += p.positive;
    win_pairs_ += double(pairs.size());
    win_targets_ += double(tg.kept);
    return out;
  }

  void window_stats(json& row, int64_t images) override {
    row["pairs_per_image"] = win_pairs_ / double(std::max<int64_t>(images, 1));
    row["positive_fraction"] = win_pairs_ > 0 ? win_pos_ / win_pairs_ : 0.0;
    row["targets_per_pair"] = win_pairs_ > 0 ? win_targets_ / win_pairs_ : 0.0;
    win_pairs_ = win_pos_ = win_targets_ = 0;
  }
  std::vector<std::pair<std::string, std::string>> progress_terms() const override {
    return {{"loss_mask", "mask"}, {"loss_class", "cls"}};
  }

  json evaluate(TrainContext& ctx, model::StudentTrunkImpl& m) override {
    torch::NoGradGuard ng;
    const bool was_training = m.is_training();
    m.eval();
    compat::CudaAutocast ac(ctx.run.autocast);
    double miou = 0, biou = 0, n_match = 0, pres_agree = 0, n_pairs = 0, ciou = 0, n_pos = 0, fp_neg = 0, n_neg = 0;
    double cos = 0, n_img = 0;
    for (const auto& eb : evset_) {
      at::Tensor feats;
      auto images = eb.images.to(ctx.run.device);
      auto fpn = student_fpn(m, images, &feats);
      auto t = eb.teacher_feats.to(ctx.run.device).to(torch::kFloat);
      cos += torch::cosine_similarity(feats.to(torch::kFloat), t, 1, 1e-8).mean({1, 2}).sum().item<double>();
      n_img += double(images.size(0));
      auto [img, con] = pair_tensors(ctx, eb.pairs);
      auto [text, pad] = text_of(s_phr_, con);
      auto s = ground(*teacher_, fpn, img, text, pad);
      auto s_cpu_logits = s.logits.cpu(), s_cpu_boxes = s.boxes.cpu();
      auto matches = hungarian_match_batch(s_cpu_logits, s_cpu_boxes, eb.targets.boxes, L.match);
      auto s_scores = s.scores().cpu();
      auto s_masks = s.masks.to(torch::kFloat).cpu();
      for (size_t p = 0; p < eb.pairs.size(); ++p) {
        const auto ip = int64_t(p);
        for (const auto& [q, k] : matches[p]) {
          miou += mask_iou(s_masks[ip][q] > 0, eb.targets.masks[p][k].to(torch::kFloat) > 0);
          biou += box_iou_paired(box_cxcywh_to_xyxy(s_cpu_boxes[ip][q].unsqueeze(0)),
                                 box_cxcywh_to_xyxy(eb.targets.boxes[p][k].unsqueeze(0))).item<double>();
          n_match += 1;
        }
        const bool sp = torch::sigmoid(s.presence[ip]).item<double>() >= 0.5;
        const bool tp = torch::sigmoid(eb.targets.all.presence[ip]).item<double>() >= 0.5;
        pres_agree += sp == tp;
        n_pairs += 1;
        auto kept = (s_scores[ip] >= L.tau_keep).nonzero().squeeze(1);
        auto su = kept.size(0) > 0 ? (s_masks[ip].index_select(0, kept) > 0).any(0) : torch::zeros({s_masks.size(2), s_masks.size(3)}, torch::kBool);
        const auto& tm = eb.targets.masks[p];
        if (tm.size(0) > 0) {
          auto tu = (tm.to(torch::kFloat) > 0).any(0);
          ciou += mask_iou(su, tu);
          n_pos += 1;
        } else {
          fp_neg += kept.size(0) > 0;
          n_neg += 1;
        }
      }
    }
    if (was_training) m.train();
    auto div = [](double a, double b) { return b > 0 ? a / b : 0.0; };
    return json{{"concept_mask_iou", div(ciou, n_pos)}, {"matched_mask_iou", div(miou, n_match)},
                {"matched_box_iou", div(biou, n_match)}, {"presence_agreement", div(pres_agree, n_pairs)},
                {"negative_false_positive_rate", div(fp_neg, n_neg)}, {"trunk_cosine", div(cos, n_img)}};
  }
  std::string selection_metric() const override { return "concept_mask_iou"; }
  std::string summarize(const json& r) const override {
    return fmt::format("concept mask IoU {:.4f}, matched mask IoU {:.4f}, box IoU {:.4f}, presence agreement {:.3f}, "
                       "negative FP rate {:.3f}, trunk cosine {:.4f}", r["concept_mask_iou"].get<double>(),
                       r["matched_mask_iou"].get<double>(), r["matched_box_iou"].get<double>(),
                       r["presence_agreement"].get<double>(), r["negative_false_positive_rate"].get<double>(),
                       r["trunk_cosine"].get<double>());
  }

  void on_end(TrainContext&, bool completed) override {
    if (!completed || !sneck_) return;
    sneck_->save_module("detector_neck", cfg_.run_dir + "/detector_neck.pt");
    spdlog::info("fine-tuned detector neck written to {}/detector_neck.pt", cfg_.run_dir);
  }

 private:
  // Held-out batch: images, fixed pairs and the teacher's targets.
  struct EvalBatch {
    at::Tensor images;         // CPU
    std::vector<Pair> pairs;
    Targets targets;           // CPU
    at::Tensor teacher_feats;  // CPU fp16
  };

  Fpn teacher_fpn(const TrainContext& ctx, const at::Tensor& images, at::Tensor* feats) const {
    torch::NoGradGuard ng;
    compat::CudaAutocast ac(ctx.run.autocast);
    auto f = teacher_->trunk(images);
    if (feats) *feats = f.to(torch::kFloat);
    auto [a, b, c] = teacher_->detector_neck(f);
    return Fpn{a, b, c};
  }
  Fpn student_fpn(model::StudentTrunkImpl& m, const at::Tensor& images, at::Tensor* feats) const {
    auto f = m.forward_resized(images);
    if (feats) *feats = f;
    auto [a, b, c] = (sneck_ ? *sneck_ : *teacher_).detector_neck(f);
    return Fpn{a, b, c};
  }
  static std::pair<at::Tensor, at::Tensor> text_of(const teacher::PhraseTable& table, const at::Tensor& vocab_ids) {
    return {table.text.index_select(0, vocab_ids), table.pad.index_select(0, vocab_ids)};
  }
  // The teacher on every scanned concept of every image: rows image-major (b * n + k), no grad.
  Ground scan_ground(const TrainContext& ctx, const Fpn& fpn, int64_t B, const std::vector<int64_t>& scan) const {
    torch::NoGradGuard ng;
    compat::CudaAutocast ac(ctx.run.autocast);
    const int64_t n = int64_t(scan.size());
    auto vi = torch::tensor(scan, torch::kLong).to(ctx.run.device);
    auto img = torch::arange(B, torch::TensorOptions().dtype(torch::kLong).device(ctx.run.device)).repeat_interleave(n);
    auto [text, pad] = text_of(t_phr_, vi.repeat({B}));
    return ground(*teacher_, fpn, img, text, pad);
  }
  // Top score of every scanned concept of every image: (B, n_scan), CPU.
  static at::Tensor top_scores(const Ground& g, int64_t B, int64_t n) { return g.scores().amax(1).view({B, n}).cpu(); }
  // The teacher's targets for the chosen pairs, taken from the scan's rows (the scan already ran the
  // teacher on every pair it can choose; a second pass would recompute the same outputs).
  Targets scan_targets(Ground g, const std::vector<Pair>& pairs, const std::vector<int64_t>& scan) const {
    std::vector<int64_t> rows;
    for (const auto& p : pairs) {
      const auto k = std::find(scan.begin(), scan.end(), p.concept) - scan.begin();
      INSTINCT_ASSERT(k < int64_t(scan.size()));  // pick_pairs only chooses scanned concepts
      rows.push_back(p.image * int64_t(scan.size()) + k);
    }
    auto r = torch::tensor(rows, torch::kLong).to(g.logits.device());
    auto sel = [&](const at::Tensor& t, int64_t dim) { return t.defined() ? t.index_select(dim, r) : t; };
    return make_targets(Ground{sel(g.logits, 0), sel(g.boxes, 0), sel(g.masks, 0), sel(g.presence, 0), sel(g.memory, 1),
                               sel(g.queries, 0)},
                        L.tau_keep);
  }
  std::vector<Pair> pick_pairs(const at::Tensor& top, const std::vector<int64_t>& scan, uint64_t& rng) const {
    const auto& c = cfg_.concepts;
    std::vector<Pair> pairs;
    for (int64_t b = 0; b < top.size(0); ++b) {
      std::vector<int64_t> pos, neg;
      for (size_t k = 0; k < scan.size(); ++k) (top[b][int64_t(k)].item<double>() >= c.positive_threshold ? pos : neg).push_back(scan[k]);
      portable_shuffle(pos, rng);
      portable_shuffle(neg, rng);
      pos.resize(std::min(pos.size(), size_t(c.positives)));
      const size_t n_neg = std::min(neg.size(), size_t(std::max<double>(c.min_negatives, std::lround(c.negative_ratio * double(pos.size())))));
      for (auto k : pos) pairs.push_back({b, k, true});
      for (size_t k = 0; k < n_neg; ++k) pairs.push_back({b, neg[k], false});
    }
    return pairs;
  }
  static std::pair<at::Tensor, at::Tensor> pair_tensors(const TrainContext& ctx, const std::vector<Pair>& pairs) {
    std::vector<int64_t> img, con;
    for (const auto& p : pairs) {
      img.push_back(p.image);
      con.push_back(p.concept);
    }
    return {torch::tensor(img, torch::kLong).to(ctx.run.device), torch::tensor(con, torch::kLong).to(ctx.run.device)};
  }
  // Region-text InfoNCE between the projected matched query embeddings and the concept embeddings
  // of the batch's distinct concepts (pooled student text tokens).
  at::Tensor align_loss(const at::Device& dev, const std::vector<Pair>& pairs, const Ground& s,
                        const std::vector<Match>& matches) {
    std::map<int64_t, int64_t> slot;
    std::vector<int64_t> uniq, pc;
    for (const auto& p : pairs) {
      auto it = slot.emplace(p.concept, int64_t(uniq.size()));
      if (it.second) uniq.push_back(p.concept);
      pc.push_back(it.first->second);
    }
    auto [ut, up] = text_of(s_phr_, torch::tensor(uniq, torch::kLong).to(dev));
    auto concepts = pool_text_embeddings(ut.to(torch::kFloat), up).detach();
    return region_text_loss(align_proj_->forward(s.queries.to(torch::kFloat)), matches,
                            torch::tensor(pc, torch::kLong).to(dev), concepts, L.align_tau);
  }

  ConceptConfig cfg_;
  const ConceptLossConfig& L;
  MaskLossConfig mcfg_;
  ClassKdConfig kcfg_;
  ClockConfig ccfg_;
  std::unique_ptr<teacher::TeacherBundle> teacher_, sbank_, sneck_;  // sbank_: student concept bank; sneck_: trained neck
  std::vector<std::string> vocab_;
  std::vector<int64_t> full_scan_;
  teacher::PhraseTable t_phr_, s_phr_;
  torch::nn::Linear align_proj_{nullptr};
  std::vector<EvalBatch> evset_;
  double win_pairs_ = 0, win_pos_ = 0, win_targets_ = 0;  // this log window's prompts
};

}  // namespace

int run_concept(const ConceptConfig& cfg) {
  ConceptRecipe recipe(cfg);
  return train(recipe);
}

}  // namespace instinct::distill
