// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ModelRegistry} from "./ModelRegistry.sol";
import {StakeRegistry} from "./StakeRegistry.sol";

/// @title TaoCoordinator
/// @notice Optimistic results and their k-ary dispute game (DESIGN §2).
///
/// Result: Pending --finalize (after the window, no open dispute)--> Finalized
///         Pending --challenge (inside the window)--> Disputed --> Rejected (challenger won)
///                                                              \-> Pending (re-opened, window renewed)
/// Challenges are queued: one dispute at a time, numbered by `attempt` (1, 2, ...). A dispute
/// that does not reject the result (the prover won the vote, the challenger timed out, or the
/// committee reached no decision) re-opens it with a fresh challenge window, so a result is
/// accepted only by a window that closes with no dispute open (see docs/contracts.md).
/// Dispute phases (all deadlines in blocks; a move is valid while block.number <= deadline,
/// `timeout` is valid once block.number > deadline):
///   ProverMove     the prover posts the frontier digests at the cuts of [a, b) (the first move
///                  also binds the end digests at 0 and N), each proven against the trace root.
///   ChallengerMove the challenger picks a sub-segment; at b == a + 1 the leaf is reached.
///   AwaitDraw      anyone draws the committee from blockhash(seedBlock), seedBlock = the block
///                  after the leaf was reached (re-anchored when older than 256 blocks).
///   Voting         members vote directly or anyone submits their EIP-712 votes; `resolve`
///                  once everyone voted or after the vote deadline.
///   Resolved
/// Payments are credited and pulled with `withdraw`.
contract TaoCoordinator {
    enum Status {
        None,
        Pending,
        Disputed,
        Finalized,
        Rejected,
        Voided // v1 only (no decision voided the result); never set since disputes re-open
    }

    enum Phase {
        None,
        ProverMove,
        ChallengerMove,
        AwaitDraw,
        Voting,
        Resolved
    }

    enum Outcome {
        None,
        ProverWon,
        ChallengerWon,
        NoQuorum
    }

    enum Reason {
        None,
        Vote,
        ProverTimeout,
        ChallengerTimeout
    }

    struct Params {
        uint64 challengeWindow; // blocks after the commit block during which a result can be challenged
        uint64 moveTimeout; // blocks each side has for a move
        uint64 voteWindow; // blocks the committee has to vote after the draw
        uint128 proverBond;
        uint128 challengerBond;
        uint8 k; // branching factor of the game
        uint8 committeeSize; // m
        uint8 quorum; // agreeing votes needed to decide (2 * quorum > m)
        uint16 voterRewardBps; // share of the loser's bond paid to the majority voters
        uint128 nonVoterPenalty; // stake taken from a member who did not vote
        address treasury; // receives penalties and dust when there is no winner
    }

    struct Result {
        address prover;
        uint32 numOps; // from the model's registration, never from the prover
        uint40 windowEnd; // last block of the current challenge window
        Status status;
        uint16 attempts; // disputes opened so far; the current (or last) one is number `attempts`
        // keccak256(abi.encode(traceRoot, inputDigest, outputDigest)): one slot binds the trace
        // and its ends; the trace root is revealed (and checked) by the first prover move.
        bytes32 commitment;
    }

    struct Fee {
        address payer;
        uint96 amount;
    }

    struct Dispute {
        address challenger;
        uint32 a;
        uint32 b;
        Phase phase;
        bool endsBound;
        uint8 round;
        uint8 size; // committee members drawn
        uint64 deadline; // move or vote deadline
        uint64 seedBlock;
        uint8 votesCast;
        uint8 slashVotes;
        uint8 tolerantVotes;
        Outcome outcome;
        uint96 ballots; // 3 bits per committee seat: 0 = no vote, else the verdict
        bytes32 digestA; // frontier digest at a (inputs of the segment)
        bytes32 digestB; // frontier digest at b (outputs of the segment)
        bytes32 cutsHash; // keccak256 of the interior cut digests of the current round
        bytes32 traceRoot; // revealed by the first prover move, checked against the commitment
    }

    uint8 public constant VERDICT_THEORETICAL_VIOLATION = 1;
    uint8 public constant VERDICT_EMPIRICAL_VIOLATION = 2;
    uint8 public constant VERDICT_WITHIN_TOLERANCE = 3;
    uint8 public constant VERDICT_DATA_UNAVAILABLE = 4;
    uint8 private constant NOT_VOTED = 255;
    uint256 private constant BALLOT_BITS = 3;
    uint256 public constant MAX_COMMITTEE = 32;
    uint256 public constant DRAW_ATTEMPTS_PER_SEAT = 4;

    bytes32 public constant VOTE_TYPEHASH = keccak256("Vote(bytes32 disputeId,uint8 verdict)");
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("TAO");
    bytes32 private constant VERSION_HASH = keccak256("1");
    uint256 private constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    ModelRegistry public immutable models;
    StakeRegistry public immutable stakes;
    uint64 public immutable challengeWindow;
    uint64 public immutable moveTimeout;
    uint64 public immutable voteWindow;
    uint128 public immutable proverBond;
    uint128 public immutable challengerBond;
    uint8 public immutable k;
    uint8 public immutable committeeSize;
    uint8 public immutable quorum;
    uint16 public immutable voterRewardBps;
    uint128 public immutable nonVoterPenalty;
    address public immutable treasury;

    mapping(bytes32 => Result) private _results;
    mapping(bytes32 => Fee) private _fees;
    mapping(bytes32 => Dispute) private _disputes;
    mapping(bytes32 => address[]) private _committee;
    mapping(address => uint256) public pending;

    // Accounting totals, stored plus one so that no write is a zero-to-nonzero store (the first
    // commit on a fresh deployment would otherwise pay 20k gas more). Read them via the views.
    uint256 private _bondsPlusOne = 1;
    uint256 private _feesPlusOne = 1;
    uint256 private _pendingPlusOne = 1;

    bool private transient _locked;

    event ResultCommitted(
        bytes32 indexed jobId,
        address indexed prover,
        bytes32 indexed modelId,
        bytes32 profileId,
        bytes32 inputDigest,
        bytes32 outputDigest,
        bytes32 traceRoot,
        uint32 numOps,
        uint64 windowEnd
    );
    /// A dispute numbered `attempt` ended without rejecting the result: it is pending again and
    /// can be challenged until `windowEnd`.
    event ResultReopened(bytes32 indexed jobId, uint16 attempt, uint64 windowEnd);
    event JobFunded(bytes32 indexed jobId, address indexed payer, uint256 amount);
    event ResultFinalized(bytes32 indexed jobId, address indexed prover, uint256 fee);
    event DisputeOpened(
        bytes32 indexed jobId, address indexed challenger, uint16 attempt, bytes32 disputeId, uint64 deadline
    );
    event ProverMoved(
        bytes32 indexed jobId, uint8 round, uint32 a, uint32 b, uint256[] cuts, bytes32[] digests, uint64 deadline
    );
    event ChallengerMoved(bytes32 indexed jobId, uint8 round, uint256 index, uint32 a, uint32 b, uint64 deadline);
    event LeafReached(bytes32 indexed jobId, uint32 op, bytes32 inputFrontier, bytes32 outputFrontier, uint64 seedBlock);
    event SeedReanchored(bytes32 indexed jobId, uint64 seedBlock);
    event CommitteeDrawn(bytes32 indexed jobId, address[] members, uint64 voteDeadline);
    event VoteCast(bytes32 indexed jobId, address indexed voter, uint8 verdict);
    event NonVoterPenalized(bytes32 indexed jobId, address indexed voter, uint256 amount);
    event DisputeResolved(
        bytes32 indexed jobId,
        Outcome outcome,
        Reason reason,
        address winner,
        uint8 slashVotes,
        uint8 tolerantVotes,
        uint8 votesCast
    );
    event Credited(address indexed account, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);

    error BadParameter();
    error ResultExists(bytes32 jobId);
    error UnknownResult(bytes32 jobId);
    error BadCommitment();
    error UnknownModel(bytes32 modelId);
    error ProfileMismatch(bytes32 modelId, bytes32 profileId);
    error CommitmentMismatch(bytes32 traceRoot, bytes32 inputDigest, bytes32 outputDigest);
    error TooManyAttempts(bytes32 jobId);
    error WrongBond(uint256 sent, uint256 required);
    error NotPending(bytes32 jobId);
    error WindowOpen(uint64 windowEnd);
    error WindowClosed(uint64 windowEnd);
    error AlreadyFunded(bytes32 jobId);
    error Settled(bytes32 jobId);
    error BadAmount();
    error SelfChallenge();
    error WrongPhase(Phase phase);
    error NotParty(address caller);
    error DeadlinePassed(uint64 deadline);
    error DeadlineNotPassed(uint64 deadline);
    error WrongDigestCount(uint256 given, uint256 expected);
    error WrongProofLength(uint256 given, uint256 expected);
    error BadProof(uint256 cut);
    error BadIndex(uint256 index);
    error WrongCutDigests();
    error SeedNotReady(uint64 seedBlock);
    error BadVerdict(uint8 verdict);
    error NotMember(address voter);
    error BadSeat(uint256 seat);
    error AlreadyVoted(address voter);
    error BadSignature();
    error LengthMismatch();
    error VotingOpen(uint64 deadline);
    error NothingToWithdraw();
    error TransferFailed();
    error Reentrancy();

    constructor(ModelRegistry models_, StakeRegistry stakes_, Params memory p) {
        if (
            address(models_) == address(0) || address(stakes_) == address(0) || p.k < 2 || p.committeeSize == 0
                || p.committeeSize > MAX_COMMITTEE || p.quorum == 0 || p.quorum > p.committeeSize
                || 2 * uint256(p.quorum) <= p.committeeSize || p.voterRewardBps > 10_000 || p.challengeWindow == 0
                || p.moveTimeout == 0 || p.voteWindow == 0 || p.proverBond == 0 || p.challengerBond == 0
                || p.treasury == address(0)
        ) revert BadParameter();
        models = models_;
        stakes = stakes_;
        challengeWindow = p.challengeWindow;
        moveTimeout = p.moveTimeout;
        voteWindow = p.voteWindow;
        proverBond = p.proverBond;
        challengerBond = p.challengerBond;
        k = p.k;
        committeeSize = p.committeeSize;
        quorum = p.quorum;
        voterRewardBps = p.voterRewardBps;
        nonVoterPenalty = p.nonVoterPenalty;
        treasury = p.treasury;
    }

    modifier nonReentrant() {
        if (_locked) revert Reentrancy();
        _locked = true;
        _;
        _locked = false;
    }

    // ------------------------------------------------------------------ results

    /// @notice Posts a result with the prover bond (msg.value == proverBond). `profileId` must be
    /// the model's active profile; N is the model's registered op count. Stored: one hash of
    /// the trace root and the end digests (all fields are in the event).
    function commitResult(
        bytes32 jobId,
        bytes32 modelId,
        bytes32 profileId,
        bytes32 inputDigest,
        bytes32 outputDigest,
        bytes32 traceRoot
    ) external payable {
        if (_results[jobId].status != Status.None) revert ResultExists(jobId);
        if (jobId == bytes32(0) || traceRoot == bytes32(0)) revert BadCommitment();
        if (msg.value != proverBond) revert WrongBond(msg.value, proverBond);
        // Invariant: N comes from the registration (which the model id, a hash of the graph,
        // fixes), never from the prover: a prover-chosen N + 1 sent the honest challenger's
        // indices past the model's last op, so it could only time out.
        (bytes32 active, uint32 numOps) = models.termsOf(modelId);
        if (numOps == 0) revert UnknownModel(modelId);
        // Invariant: only the model's active profile (changed through the registry's timelock)
        // may judge a new result; a prover cannot name a looser one.
        if (profileId == bytes32(0) || active != profileId) revert ProfileMismatch(modelId, profileId);
        uint64 windowEnd = uint64(block.number) + challengeWindow;
        // Invariant: the end digests are bound with the trace root in one commitment, and the
        // first move must prove cut 0 and cut N equal to them; without this a prover could
        // return a manipulated output while committing an honest (or recycled) trace.
        _results[jobId] = Result(
            msg.sender,
            numOps,
            uint40(windowEnd),
            Status.Pending,
            0,
            keccak256(abi.encode(traceRoot, inputDigest, outputDigest))
        );
        _bondsPlusOne += msg.value;
        emit ResultCommitted(
            jobId, msg.sender, modelId, profileId, inputDigest, outputDigest, traceRoot, numOps, windowEnd
        );
    }

    /// @notice Escrows the job's fee (once, by anyone, while the result is open). Paid to the
    /// prover when the result is accepted, refunded to the payer otherwise.
    function fundJob(bytes32 jobId) external payable {
        Status s = _results[jobId].status;
        if (s == Status.None) revert UnknownResult(jobId);
        if (s != Status.Pending && s != Status.Disputed) revert Settled(jobId);
        if (_fees[jobId].amount != 0) revert AlreadyFunded(jobId);
        if (msg.value == 0 || msg.value > type(uint96).max) revert BadAmount();
        _fees[jobId] = Fee(msg.sender, uint96(msg.value));
        _feesPlusOne += msg.value;
        emit JobFunded(jobId, msg.sender, msg.value);
    }

    /// @notice Accepts an undisputed result after its window: bond back and fee to the prover.
    function finalize(bytes32 jobId) external {
        Result storage r = _results[jobId];
        if (r.status == Status.None) revert UnknownResult(jobId);
        if (r.status != Status.Pending) revert NotPending(jobId);
        uint64 windowEnd = r.windowEnd;
        // Invariant: only a window that closes with no dispute open accepts a result; a
        // dispute's end re-opens it with a renewed window, so no dispute can finalize a result.
        if (block.number <= windowEnd) revert WindowOpen(windowEnd);
        r.status = Status.Finalized;
        _bondsPlusOne -= proverBond;
        uint256 fee = _takeFee(jobId);
        emit ResultFinalized(jobId, r.prover, fee);
        _credit(r.prover, proverBond + fee);
    }

    // ------------------------------------------------------------------ dispute game

    /// @notice Opens the result's next dispute (attempt `attempts + 1`) with msg.value ==
    /// challengerBond. One dispute at a time (queued challenges): while one is open, others wait
    /// for it to end; if it does not reject the result, the result re-opens for them.
    function challenge(bytes32 jobId) external payable {
        Result storage r = _results[jobId];
        if (r.status == Status.None) revert UnknownResult(jobId);
        if (r.status != Status.Pending) revert NotPending(jobId);
        uint64 windowEnd = r.windowEnd;
        if (block.number > windowEnd) revert WindowClosed(windowEnd);
        if (msg.value != challengerBond) revert WrongBond(msg.value, challengerBond);
        if (msg.sender == r.prover) revert SelfChallenge();
        uint16 attempt = r.attempts;
        if (attempt == type(uint16).max) revert TooManyAttempts(jobId);
        attempt += 1;
        r.attempts = attempt;
        r.status = Status.Disputed;
        _bondsPlusOne += msg.value;
        if (attempt > 1) {
            // Invariant: every attempt starts from a clean game, committee and ballot box, so
            // nothing of an earlier dispute (its seats, its votes) carries into this one.
            delete _disputes[jobId];
            delete _committee[jobId];
        }
        Dispute storage d = _disputes[jobId];
        d.challenger = msg.sender;
        d.a = 0;
        d.b = r.numOps;
        d.phase = Phase.ProverMove;
        uint64 deadline = uint64(block.number) + moveTimeout;
        d.deadline = deadline;
        emit DisputeOpened(jobId, msg.sender, attempt, disputeIdFor(jobId, attempt), deadline);
    }

    /// @notice The prover's move. `digests` are the frontier digests at `expectedCuts(jobId)`
    /// (first move: cut 0, cut N, then the interior cuts); `proofs` concatenates one Merkle proof
    /// of `proofLength(jobId)` siblings per digest, against the trace root.
    function proverMove(bytes32 jobId, bytes32[] calldata digests, bytes32[] calldata proofs) external {
        Dispute storage d = _disputes[jobId];
        Result storage r = _results[jobId];
        _expectPhase(d, Phase.ProverMove);
        if (msg.sender != r.prover) revert NotParty(msg.sender);
        uint256[] memory cutList = _expectedCuts(d);
        if (digests.length != cutList.length) revert WrongDigestCount(digests.length, cutList.length);
        uint256 depth = _depth(r.numOps);
        if (proofs.length != depth * cutList.length) revert WrongProofLength(proofs.length, depth * cutList.length);
        bytes32 root = d.traceRoot;
        uint256 verified = 0;
        if (!d.endsBound) {
            // The first move reveals the trace root (the one cut 0's proof leads to) and must
            // prove cut 0 and cut N equal to the committed input and output digests.
            // Invariant: the game descends only the committed trace, and only if its ends are
            // the committed input and output: a trace with an honest (or recycled) body under a
            // manipulated output cannot enter the game, so the prover can only time out.
            root = _rootOf(cutList[0], digests[0], proofs[0:depth]);
            if (keccak256(abi.encode(root, digests[0], digests[1])) != r.commitment) {
                revert CommitmentMismatch(root, digests[0], digests[1]);
            }
            d.traceRoot = root;
            verified = 1;
        }
        for (uint256 i = verified; i < cutList.length; ++i) {
            if (!_verify(root, cutList[i], digests[i], proofs[i * depth:(i + 1) * depth])) revert BadProof(cutList[i]);
        }
        uint256 first = 0;
        if (!d.endsBound) {
            d.endsBound = true;
            d.digestA = digests[0];
            d.digestB = digests[1];
            first = 2;
        }
        d.cutsHash = keccak256(abi.encodePacked(digests[first:]));
        emit ProverMoved(jobId, d.round, d.a, d.b, cutList, digests, d.deadline);
        if (d.b - d.a == 1) {
            _reachLeaf(jobId, d); // N == 1: the first move only binds the ends
        } else {
            d.phase = Phase.ChallengerMove;
            d.deadline = uint64(block.number) + moveTimeout;
        }
    }

    /// @notice The challenger's move: pick sub-segment `index` of the current segment.
    /// `cutDigests` repeats the interior cut digests of the prover's last move (from its
    /// ProverMoved event, without the two end digests of the first move); only their hash is
    /// stored.
    function challengerMove(bytes32 jobId, uint256 index, bytes32[] calldata cutDigests) external {
        Dispute storage d = _disputes[jobId];
        _expectPhase(d, Phase.ChallengerMove);
        if (msg.sender != d.challenger) revert NotParty(msg.sender);
        uint256 a = d.a;
        uint256 b = d.b;
        uint256 s = _numSub(a, b);
        if (index >= s) revert BadIndex(index);
        if (cutDigests.length != s - 1 || keccak256(abi.encodePacked(cutDigests)) != d.cutsHash) {
            revert WrongCutDigests();
        }
        uint256 na = a + (index * (b - a)) / s;
        uint256 nb = a + ((index + 1) * (b - a)) / s;
        if (index != 0) d.digestA = cutDigests[index - 1];
        if (index != s - 1) d.digestB = cutDigests[index];
        d.a = uint32(na);
        d.b = uint32(nb);
        uint8 round = d.round;
        d.round = round + 1;
        emit ChallengerMoved(jobId, round, index, uint32(na), uint32(nb), d.deadline);
        if (nb - na == 1) {
            _reachLeaf(jobId, d);
        } else {
            d.phase = Phase.ProverMove;
            d.deadline = uint64(block.number) + moveTimeout;
        }
    }

    /// @notice Ends a game whose side to move missed its deadline (anyone may call).
    function timeout(bytes32 jobId) external {
        Dispute storage d = _disputes[jobId];
        Phase phase = d.phase;
        if (phase != Phase.ProverMove && phase != Phase.ChallengerMove) revert WrongPhase(phase);
        if (block.number <= d.deadline) revert DeadlineNotPassed(d.deadline);
        if (phase == Phase.ProverMove) {
            _settle(jobId, d, Outcome.ChallengerWon, Reason.ProverTimeout);
        } else {
            _settle(jobId, d, Outcome.ProverWon, Reason.ChallengerTimeout);
        }
    }

    /// @notice Draws the committee from blockhash(seedBlock) (anyone may call once the seed block
    /// exists). If the seed block is older than 256 blocks its hash is gone: the seed is moved to
    /// the next block and the call returns without drawing.
    function drawCommittee(bytes32 jobId) external {
        Dispute storage d = _disputes[jobId];
        _expectPhase(d, Phase.AwaitDraw);
        uint64 seedBlock = d.seedBlock;
        if (block.number <= seedBlock) revert SeedNotReady(seedBlock);
        bytes32 h = blockhash(seedBlock);
        if (h == bytes32(0)) {
            uint64 next = uint64(block.number) + 1;
            d.seedBlock = next;
            emit SeedReanchored(jobId, next);
            return;
        }
        Result storage r = _results[jobId];
        address[] memory members = _select(keccak256(abi.encode(h, jobId)), r.prover, d.challenger);
        address[] storage committee = _committee[jobId];
        for (uint256 i = 0; i < members.length; ++i) {
            committee.push(members[i]);
        }
        d.size = uint8(members.length);
        d.phase = Phase.Voting;
        uint64 deadline = uint64(block.number) + voteWindow;
        d.deadline = deadline;
        emit CommitteeDrawn(jobId, members, deadline);
    }

    /// @notice A member's own vote; `seat` is its position in `committeeOf(jobId)`.
    function vote(bytes32 jobId, uint8 seat, uint8 verdict) external {
        Dispute storage d = _disputes[jobId];
        _expectVoting(d);
        _record(jobId, d, seat, msg.sender, verdict);
    }

    /// @notice Submits members' EIP-712 votes (signature = r ‖ s ‖ v, 65 bytes); anyone may call.
    /// `seats[i]` is the signer's position in `committeeOf(jobId)`.
    function submitVotes(
        bytes32 jobId,
        uint8[] calldata seats,
        uint8[] calldata verdicts,
        bytes[] calldata signatures
    ) external {
        if (verdicts.length != signatures.length || seats.length != verdicts.length || verdicts.length == 0) {
            revert LengthMismatch();
        }
        Dispute storage d = _disputes[jobId];
        _expectVoting(d);
        if (verdicts.length > d.size) revert LengthMismatch();
        bytes32 domain = domainSeparator();
        // Invariant: a vote signs the dispute (job and attempt), so a vote cast in an earlier
        // dispute of the same result cannot be replayed into this one.
        bytes32 disputeId = disputeIdFor(jobId, _results[jobId].attempts);
        for (uint256 i = 0; i < verdicts.length; ++i) {
            bytes32 structHash = keccak256(abi.encode(VOTE_TYPEHASH, disputeId, verdicts[i]));
            bytes32 digest = keccak256(abi.encodePacked(hex"1901", domain, structHash));
            _record(jobId, d, seats[i], _recover(digest, signatures[i]), verdicts[i]);
        }
    }

    /// @notice Tallies the votes once all members voted or the vote deadline passed.
    /// `quorum` agreeing votes decide; otherwise there is no decision (both bonds returned).
    function resolve(bytes32 jobId) external {
        Dispute storage d = _disputes[jobId];
        _expectPhase(d, Phase.Voting);
        if (block.number <= d.deadline && d.votesCast < d.size) revert VotingOpen(d.deadline);
        Outcome outcome;
        if (d.slashVotes >= quorum) outcome = Outcome.ChallengerWon;
        else if (d.tolerantVotes >= quorum) outcome = Outcome.ProverWon;
        else outcome = Outcome.NoQuorum;
        _settle(jobId, d, outcome, Reason.Vote);
    }

    /// @notice Pays out the caller's credits (pull payment).
    function withdraw() external nonReentrant {
        uint256 amount = pending[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        pending[msg.sender] = 0;
        _pendingPlusOne -= amount;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    // ------------------------------------------------------------------ views

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    function resultOf(bytes32 jobId)
        external
        view
        returns (
            address prover,
            uint32 numOps,
            uint64 windowEnd,
            uint8 status,
            uint16 attempts,
            bytes32 commitment
        )
    {
        Result storage r = _results[jobId];
        return (r.prover, r.numOps, r.windowEnd, uint8(r.status), r.attempts, r.commitment);
    }

    /// @notice What `resultOf(jobId).commitment` holds for a result with these fields.
    function commitmentFor(bytes32 traceRoot, bytes32 inputDigest, bytes32 outputDigest)
        external
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(traceRoot, inputDigest, outputDigest));
    }

    /// @notice The trace root the current dispute's first move revealed (zero before it).
    function traceRootOf(bytes32 jobId) external view returns (bytes32) {
        return _disputes[jobId].traceRoot;
    }

    /// @notice The id of dispute number `attempt` of a result: what EIP-712 votes sign.
    function disputeIdFor(bytes32 jobId, uint16 attempt) public pure returns (bytes32) {
        return keccak256(abi.encode(jobId, attempt));
    }

    /// @notice The id of the result's current (or last) dispute; zero before the first one.
    function disputeIdOf(bytes32 jobId) external view returns (bytes32) {
        uint16 attempt = _results[jobId].attempts;
        return attempt == 0 ? bytes32(0) : disputeIdFor(jobId, attempt);
    }

    function feeOf(bytes32 jobId) external view returns (address payer, uint256 amount) {
        Fee storage f = _fees[jobId];
        return (f.payer, f.amount);
    }

    function disputeOf(bytes32 jobId)
        external
        view
        returns (
            address challenger,
            uint32 a,
            uint32 b,
            uint8 phase,
            uint8 round,
            uint64 deadline,
            uint64 seedBlock,
            bytes32 digestA,
            bytes32 digestB
        )
    {
        Dispute storage d = _disputes[jobId];
        return (d.challenger, d.a, d.b, uint8(d.phase), d.round, d.deadline, d.seedBlock, d.digestA, d.digestB);
    }

    function tallyOf(bytes32 jobId)
        external
        view
        returns (uint8 size, uint8 votesCast, uint8 slashVotes, uint8 tolerantVotes, uint8 outcome)
    {
        Dispute storage d = _disputes[jobId];
        return (d.size, d.votesCast, d.slashVotes, d.tolerantVotes, uint8(d.outcome));
    }

    /// @notice The cuts the prover must prove in its next move (first move: 0, N, interior cuts).
    function expectedCuts(bytes32 jobId) external view returns (uint256[] memory) {
        Dispute storage d = _disputes[jobId];
        if (d.phase != Phase.ProverMove) revert WrongPhase(d.phase);
        return _expectedCuts(d);
    }

    /// @notice Open bonds held (prover and challenger bonds of unsettled results).
    function totalBonds() external view returns (uint256) {
        return _bondsPlusOne - 1;
    }

    /// @notice Escrowed fees of unsettled results.
    function totalFees() external view returns (uint256) {
        return _feesPlusOne - 1;
    }

    /// @notice Credits waiting to be withdrawn.
    function totalPending() external view returns (uint256) {
        return _pendingPlusOne - 1;
    }

    function committeeOf(bytes32 jobId) external view returns (address[] memory) {
        return _committee[jobId];
    }

    /// @notice 0: not a member; 255: member without a vote; else the verdict.
    function ballotOf(bytes32 jobId, address voter) external view returns (uint8) {
        address[] storage committee = _committee[jobId];
        uint256 ballots = _disputes[jobId].ballots;
        for (uint256 i = 0; i < committee.length; ++i) {
            if (committee[i] == voter) {
                uint8 b = uint8((ballots >> (i * BALLOT_BITS)) & 7);
                return b == 0 ? NOT_VOTED : b;
            }
        }
        return 0;
    }

    /// @notice Merkle proof length (siblings) for a trace of `numOps` ops (N + 1 leaves).
    function proofLength(uint32 numOps) external pure returns (uint256) {
        return _depth(numOps);
    }

    /// @notice Checks a trace Merkle proof (DESIGN §2 encoding), exactly as the prover's move does.
    function verifyProof(bytes32 root, uint256 index, bytes32 value, bytes32[] calldata proof)
        external
        pure
        returns (bool)
    {
        if (proof.length < 256 && index >> proof.length != 0) return false;
        return _verify(root, index, value, proof);
    }

    /// @notice The committee `drawCommittee` would pick for `seed` (exposed for audits and tests).
    function previewCommittee(bytes32 seed, address prover, address challenger)
        external
        view
        returns (address[] memory)
    {
        return _select(seed, prover, challenger);
    }

    // ------------------------------------------------------------------ internals

    function _expectPhase(Dispute storage d, Phase phase) private view {
        if (d.phase != phase) revert WrongPhase(d.phase);
        if ((phase == Phase.ProverMove || phase == Phase.ChallengerMove) && block.number > d.deadline) {
            revert DeadlinePassed(d.deadline);
        }
    }

    function _expectVoting(Dispute storage d) private view {
        if (d.phase != Phase.Voting) revert WrongPhase(d.phase);
        if (block.number > d.deadline) revert DeadlinePassed(d.deadline);
    }

    function _numSub(uint256 a, uint256 b) private view returns (uint256) {
        uint256 len = b - a;
        return len < k ? len : k;
    }

    function _expectedCuts(Dispute storage d) private view returns (uint256[] memory cutList) {
        uint256 a = d.a;
        uint256 b = d.b;
        uint256 interior = b - a >= 2 ? _numSub(a, b) - 1 : 0;
        uint256 first = d.endsBound ? 0 : 2;
        cutList = new uint256[](first + interior);
        if (first == 2) {
            cutList[0] = a;
            cutList[1] = b;
        }
        if (interior != 0) {
            uint256 s = interior + 1;
            for (uint256 i = 1; i < s; ++i) {
                cutList[first + i - 1] = a + (i * (b - a)) / s;
            }
        }
    }

    function _depth(uint256 numOps) private pure returns (uint256 depth) {
        uint256 width = 1;
        while (width < numOps + 1) {
            width <<= 1;
            ++depth;
        }
    }

    function _verify(bytes32 root, uint256 index, bytes32 value, bytes32[] calldata proof) private pure returns (bool) {
        return _rootOf(index, value, proof) == root;
    }

    /// The root a Merkle proof of `value` at `index` leads to (DESIGN §2 encoding).
    function _rootOf(uint256 index, bytes32 value, bytes32[] calldata proof) private pure returns (bytes32 h) {
        h = keccak256(abi.encodePacked(bytes1(0x00), index, value));
        for (uint256 level = 0; level < proof.length; ++level) {
            h = (index >> level) & 1 == 1
                ? keccak256(abi.encodePacked(bytes1(0x01), proof[level], h))
                : keccak256(abi.encodePacked(bytes1(0x01), h, proof[level]));
        }
    }

    function _reachLeaf(bytes32 jobId, Dispute storage d) private {
        d.phase = Phase.AwaitDraw;
        uint64 seedBlock = uint64(block.number) + 1;
        d.seedBlock = seedBlock;
        d.deadline = 0;
        emit LeafReached(jobId, d.a, d.digestA, d.digestB, seedBlock);
    }

    /// Stake-weighted sampling over all nodes but the two parties (their stake is skipped, not
    /// rejected), without replacement by rejecting repeats: at most
    /// DRAW_ATTEMPTS_PER_SEAT * committeeSize samples, so the committee may come out smaller than
    /// `committeeSize` when few nodes (or a few very large stakes) are registered.
    function _select(bytes32 seed, address prover, address challenger) private view returns (address[] memory) {
        uint256 m = committeeSize;
        return stakes.sampleCommittee(seed, m, m * DRAW_ATTEMPTS_PER_SEAT, prover, challenger);
    }

    function _record(bytes32 jobId, Dispute storage d, uint8 seat, address voter, uint8 verdict) private {
        if (verdict == 0 || verdict > VERDICT_DATA_UNAVAILABLE) revert BadVerdict(verdict);
        if (seat >= d.size) revert BadSeat(seat);
        if (_committee[jobId][seat] != voter) revert NotMember(voter);
        uint256 shift = uint256(seat) * BALLOT_BITS;
        uint96 ballots = d.ballots;
        if ((ballots >> shift) & 7 != 0) revert AlreadyVoted(voter);
        d.ballots = ballots | uint96(uint256(verdict) << shift);
        d.votesCast += 1;
        if (verdict == VERDICT_WITHIN_TOLERANCE) d.tolerantVotes += 1;
        else d.slashVotes += 1;
        emit VoteCast(jobId, voter, verdict);
    }

    function _recover(bytes32 digest, bytes calldata sig) private pure returns (address signer) {
        if (sig.length != 65) revert BadSignature();
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        if (uint256(s) > HALF_N || (v != 27 && v != 28)) revert BadSignature();
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert BadSignature();
    }

    function _takeFee(bytes32 jobId) private returns (uint256 amount) {
        amount = _fees[jobId].amount;
        if (amount != 0) {
            _fees[jobId].amount = 0;
            _feesPlusOne -= amount;
        }
    }

    function _credit(address account, uint256 amount) private {
        if (amount == 0) return;
        pending[account] += amount;
        _pendingPlusOne += amount;
        emit Credited(account, amount);
    }

    /// Effects first (status, phase, totals, credits), then the registry calls for penalties.
    function _settle(bytes32 jobId, Dispute storage d, Outcome outcome, Reason reason) private {
        Result storage r = _results[jobId];
        d.phase = Phase.Resolved;
        d.outcome = outcome;
        address winner;
        uint64 windowEnd;
        if (outcome == Outcome.ChallengerWon) {
            r.status = Status.Rejected;
            _bondsPlusOne -= uint256(proverBond) + challengerBond;
            address payer = _fees[jobId].payer;
            uint256 fee = _takeFee(jobId);
            winner = d.challenger;
            uint256 paid = reason == Reason.Vote ? _payMajority(jobId, d, false, proverBond) : 0;
            _credit(winner, uint256(challengerBond) + proverBond - paid);
            _credit(payer, fee);
        } else {
            // Invariant: a dispute that does not reject the result never settles it. It re-opens
            // with a renewed window, and the prover's bond and the fee stay escrowed. This stops
            // the self-challenge shield: a prover challenging its own cheat from a second key
            // and timing out (or losing the vote on purpose) no longer finalizes it, and honest
            // challengers get their turn in the new window.
            _bondsPlusOne -= challengerBond;
            if (outcome == Outcome.NoQuorum) {
                _credit(d.challenger, challengerBond); // nobody was shown wrong
            } else {
                winner = r.prover;
                // Invariant: a forfeited challenger bond never goes to the prover (else the
                // self-challenge would cost the prover nothing): the majority voters' share,
                // the rest (all of it on a timeout) to the treasury.
                uint256 paid = reason == Reason.Vote ? _payMajority(jobId, d, true, challengerBond) : 0;
                _credit(treasury, uint256(challengerBond) - paid);
            }
            r.status = Status.Pending;
            windowEnd = uint64(block.number) + challengeWindow;
            r.windowEnd = uint40(windowEnd);
        }
        emit DisputeResolved(jobId, outcome, reason, winner, d.slashVotes, d.tolerantVotes, d.votesCast);
        if (outcome != Outcome.ChallengerWon) emit ResultReopened(jobId, r.attempts, windowEnd);
        // Non-voters' stake goes to a winning challenger, otherwise to the treasury: a prover
        // whose result is not settled by the dispute takes nothing from it.
        if (reason == Reason.Vote) {
            _penalizeNonVoters(jobId, d.ballots, outcome == Outcome.ChallengerWon ? d.challenger : treasury);
        }
    }

    function _payMajority(bytes32 jobId, Dispute storage d, bool proverWon, uint256 loserBond)
        private
        returns (uint256 paid)
    {
        uint256 majority = proverWon ? d.tolerantVotes : d.slashVotes;
        if (majority == 0) return 0;
        uint256 share = (loserBond * voterRewardBps) / 10_000 / majority;
        if (share == 0) return 0;
        address[] storage committee = _committee[jobId];
        uint256 ballots = d.ballots;
        for (uint256 i = 0; i < committee.length; ++i) {
            uint256 b = (ballots >> (i * BALLOT_BITS)) & 7;
            if (b == 0) continue;
            if ((b == VERDICT_WITHIN_TOLERANCE) == proverWon) {
                _credit(committee[i], share);
                paid += share;
            }
        }
    }

    function _penalizeNonVoters(bytes32 jobId, uint256 ballots, address beneficiary) private {
        if (nonVoterPenalty == 0) return;
        address[] storage committee = _committee[jobId];
        for (uint256 i = 0; i < committee.length; ++i) {
            if ((ballots >> (i * BALLOT_BITS)) & 7 != 0) continue;
            address member = committee[i];
            uint256 taken = stakes.slash(member, nonVoterPenalty, beneficiary);
            emit NonVoterPenalized(jobId, member, taken);
        }
    }
}
